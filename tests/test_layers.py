"""DESIGN §1: who may import whom. Checked statically over every module's imports."""

from __future__ import annotations

import ast
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


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
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
        PACKAGE / "core" / name for name in ("sealing.py", "usercode.py", "__init__.py")
    ]
    bad = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in client_modules
        for name in _imports(path)
        if name.split(".")[0] in CLIENT_FORBIDDEN
    ]
    assert not bad, "\n".join(bad)
