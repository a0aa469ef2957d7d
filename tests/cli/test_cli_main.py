"""The command group: version, help, option checks, the lazy `server` group, imports."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from envcat import __version__
from envcat.cli import commands as cli_commands
from envcat.cli.commands import SERVER_EXTRA_HINT
from envcat.cli.main import cli

SERVER_ONLY = ("flask", "celery", "sqlalchemy", "pydantic", "redis", "alembic", "gunicorn")
SERVER_LAYERS = ("envcat.api", "envcat.bff", "envcat.workers", "envcat.services", "envcat.models")
HEAVY_CLIENT = ("httpx", "nacl", "qrcode")


def imported_after(code: str) -> set[str]:
    """Run `code` in a fresh interpreter; return the top-level and envcat modules it loaded."""
    probe = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"envcat {__version__}\n"


def test_help_lists_commands_with_static_help_for_server() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "get " in result.stdout and "run " in result.stdout
    assert re.search(r"\n  server +Run and administer an EnvCat server", result.stdout)


def test_version_and_help_import_only_click() -> None:
    for argv in (["--version"], ["--help"], ["get", "--help"], ["run", "--help"]):
        modules = imported_after(
            "from envcat.cli.main import cli\n"
            f"try:\n    cli.main({argv!r}, prog_name='envcat')\nexcept SystemExit:\n    pass"
        )
        loaded = {name for name in modules if name.split(".")[0] in HEAVY_CLIENT}
        assert not loaded, f"{argv} imported {sorted(loaded)}"
        assert not any(name.startswith("envcat.ops") for name in modules)


def test_the_whole_cli_package_never_imports_server_code() -> None:
    modules = imported_after(
        "import pkgutil, importlib, envcat.cli\n"
        "for info in pkgutil.iter_modules(envcat.cli.__path__, 'envcat.cli.'):\n"
        "    importlib.import_module(info.name)"
    )
    assert "envcat.cli.flow" in modules
    assert not {name for name in modules if name.split(".")[0] in SERVER_ONLY}
    assert not {name for name in modules if name.startswith(SERVER_LAYERS)}


@pytest.fixture
def lazy_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """Point the lazy `server` entry at a throw-away module holding a click group."""
    module = types.ModuleType("envcat_test_ops")

    @click.group("server")
    def server() -> None:
        """Fake server commands."""

    @server.command("up")
    def up() -> None:
        click.echo("server is up")

    module.server = server  # type: ignore[attr-defined]  # a module built at run time
    monkeypatch.setitem(sys.modules, "envcat_test_ops", module)
    entry = ("envcat_test_ops", "server", "Run and administer an EnvCat server.")
    monkeypatch.setitem(cli_commands.LAZY_COMMANDS, "server", entry)
    yield module


def test_server_group_loads_on_demand(lazy_server: types.ModuleType) -> None:
    result = CliRunner().invoke(cli, ["server", "up"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "server is up\n"


def test_server_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = ("envcat_no_such_module.commands", "server", "Run a server.")
    monkeypatch.setitem(cli_commands.LAZY_COMMANDS, "server", entry)
    for argv in (["server"], ["server", "up"], ["server", "--help"]):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 1
        assert result.stderr == f"Error: {SERVER_EXTRA_HINT}\n"
    assert "server" in CliRunner().invoke(cli, ["--help"]).stdout


def test_completion_lists_the_server_group_even_without_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = ("envcat_no_such_module.commands", "server", "Run a server.")
    monkeypatch.setitem(cli_commands.LAZY_COMMANDS, "server", entry)
    result = CliRunner().invoke(
        cli,
        [],
        env={"_ENVCAT_COMPLETE": "bash_complete", "COMP_WORDS": "envcat s", "COMP_CWORD": "1"},
        prog_name="envcat",
    )
    assert result.exit_code == 0
    assert "plain,server" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "--server", "localhost:8888"], "expected an http:// or https:// URL"),
        (["get", "--server", "ftp://host"], "expected an http:// or https:// URL"),
        (["get", "-k", "NOT-A-NAME"], "'NOT-A-NAME' is not a variable name"),
        (["get", "--format", "yaml"], "'yaml' is not one of"),
        (["get", "--timeout", "0"], "0 is not in the range x>=1"),
        (["run", "prod/api"], "give the command after --"),
    ],
)
def test_usage_errors_exit_2_before_any_request(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2
    assert message in result.stderr


def test_envcat_server_environment_variable_sets_the_default(
    monkeypatch: pytest.MonkeyPatch, unused_port: int
) -> None:
    server = f"http://127.0.0.1:{unused_port}"
    monkeypatch.setenv("ENVCAT_SERVER", server)
    result = CliRunner().invoke(cli, ["get"])
    assert result.exit_code == 5
    assert server in result.stderr


def test_default_server_is_localhost_8888() -> None:
    result = CliRunner().invoke(cli, ["get", "--help"])
    assert "http://localhost:8888" in result.stdout
    assert "6 untrusted delivery" in result.stdout
