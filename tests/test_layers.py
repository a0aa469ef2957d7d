"""DESIGN §1: who may import whom. Checked statically over every module's imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "envcat"
# layer → envcat layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "services": {"models", "core"},
    "workers": {"services", "models", "core"},
    "api": {"services", "models", "core", "workers"},
    "bff": {"core"},
    "cli": {"core", "ops"},
    "ops": {"services", "models", "core", "workers", "api", "bff", "cli"},
}
# The base install (CLI only) has no server packages.
CLIENT_FORBIDDEN = {"flask", "celery", "sqlalchemy", "redis", "pydantic", "kombu", "alembic"}


# A dotted module path in a string: what importlib.import_module and lazy loaders receive.
_MODULE_STRING = re.compile(r"envcat(\.[a-z_][a-z0-9_]*)+")


def _imports(path: Path) -> set[str]:
    """Modules imported by statements, and envcat modules named in strings (importlib)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.split(":", 1)[0]  # "envcat.workers.celery:app" style too
            if _MODULE_STRING.fullmatch(text):
                names.add(text)
    return names


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_design_allows(layer: str) -> None:
    bad = []
    for path in _modules(layer):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "envcat" and len(parts) > 1 and parts[1] in ALLOWED:
                target = parts[1]
                if target != layer and target not in ALLOWED[layer]:
                    bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, "\n".join(bad)


def test_client_code_needs_no_server_packages() -> None:
    client_modules = _modules("cli") + [
        PACKAGE / "core" / name
        for name in ("sealing.py", "usercode.py", "envelope.py", "wire.py", "__init__.py")
    ]
    bad = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in client_modules
        for name in _imports(path)
        if name.split(".")[0] in CLIENT_FORBIDDEN
    ]
    assert not bad, "\n".join(bad)


def test_module_paths_in_strings_count_as_imports(tmp_path: Path) -> None:
    """A layer cannot escape the rules with importlib: the string is read as an import."""
    module = tmp_path / "lazy.py"
    module.write_text(
        'import importlib\nimportlib.import_module("envcat.services.delivery")\n'
        'TARGET = "envcat.workers.celery:app"\nTEXT = "see envcat.models for details"\n',
        encoding="utf-8",
    )
    assert _imports(module) == {"importlib", "envcat.services.delivery", "envcat.workers.celery"}
