"""The documentation's references are generated from the code, so they cannot drift."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import click
import pytest
import yaml
from mkdocs.exceptions import PluginError

from envcat.api.openapi import OPERATIONS
from envcat.cli.main import cli
from envcat.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command_paths(group: click.Group, prefix: str) -> list[str]:
    ctx = click.Context(group, info_name=prefix)
    paths = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        paths.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            paths += _command_paths(command, f"{prefix} {name}")
    return paths


def test_cli_reference_has_every_command_with_its_options(reference: ModuleType) -> None:
    text = reference.render_cli()
    paths = _command_paths(cli, "envcat")
    assert {"envcat get", "envcat run", "envcat server up", "envcat server rotate-kms"} <= set(
        paths
    )
    for path in paths:
        assert f"`{path}`" in text, path
        assert f"Usage: {path} [OPTIONS]" in text, path
    for option in ("--demo", "--api-port", "--password-stdin", "--batch-size", "--no-wait"):
        assert option in text


def test_api_reference_has_every_operation_and_schema(reference: ModuleType) -> None:
    text = reference.render_api()
    assert OPERATIONS
    for operation in OPERATIONS:
        assert f"### `{operation.method.upper()} {operation.path}`" in text
        assert operation.summary in text
    for anchor in set(re.findall(r"\]\(#([a-z0-9]+)\)", text)):
        assert re.search(rf"^### {anchor}$", text, re.IGNORECASE | re.MULTILINE), anchor


def test_configuration_reference_has_every_setting(reference: ModuleType) -> None:
    text = reference.render_configuration()
    for name, field in Settings.model_fields.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name.upper()}` |"))
        assert " ".join((field.description or "").split()) in row
    assert "| `BFF_SHARED_SECRET` | secret | **required** |" in text
    assert "| `REQUEST_TTL` | integer (30 to 3600) | `300` |" in text
    assert "| `AUTH_PROVIDER` | `local` \\| `clerk` | `local` |" in text


def test_a_setting_without_description_fails_the_build(
    reference: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    field = Settings.model_fields["log_level"]
    monkeypatch.setattr(field, "description", None)
    with pytest.raises(PluginError, match=r"Settings\.log_level has no description"):
        reference.render_configuration()


def test_markers_are_replaced_and_unknown_ones_fail(reference: ModuleType) -> None:
    reference.on_pre_build(config=None)
    page = "# Title\n\n<!-- generated: configuration -->\n\nafter\n"
    rendered = reference.on_page_markdown(page)
    assert "<!-- generated" not in rendered
    assert "| `DATABASE_URL` |" in rendered
    with pytest.raises(PluginError, match="unknown generated section"):
        reference.on_page_markdown("<!-- generated: nonsense -->\n")


def test_reference_pages_ask_for_their_generated_sections() -> None:
    for page, name in (
        ("cli-reference.md", "cli"),
        ("api-reference.md", "api"),
        ("configuration.md", "configuration"),
    ):
        assert f"<!-- generated: {name} -->\n" in (DOCS / page).read_text()


def test_every_nav_page_exists() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.Loader)  # noqa: S506  # our own file, with a !!python/name tag

    def pages(entries: list[object]) -> list[str]:
        found: list[str] = []
        for entry in entries:
            assert isinstance(entry, dict)
            for value in entry.values():
                found += pages(value) if isinstance(value, list) else [str(value)]
        return found

    listed = pages(config["nav"])
    assert {"index.md", "cli-reference.md", "api-reference.md", "security.md"} <= set(listed)
    missing = [page for page in listed if not (DOCS / page).is_file()]
    assert not missing, missing
