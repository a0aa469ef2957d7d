"""`envcat get` stores no value on disk unless asked (`--write`), and `run` none at all.

The claim is in `envcat --help` and docs/index.md. The CLI runs in-process against
the scripted public API of tests/cli/cli_fakes.py, with its config directory, its
working directory and its temporary directory under tmp_path; afterwards no file
there holds the delivered value (the pin in known_servers is the only file written).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from envcat.cli.main import cli
from envcat.cli.runtime import Runtime
from tests.cli.cli_fakes import WORKSPACE, FakeApi, FakeClock, mock_client

SERVER = "https://envcat.test"
VALUE = "value-on-disk-canary-7f3a"


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every place the CLI could write: config, cwd and temp dirs under tmp_path."""
    for name in ("ENVCAT_SERVER", "ENVCAT_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("ENVCAT_WORKSPACE", WORKSPACE)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def _invoke(*args: str) -> Result:
    api = FakeApi(values={"API_KEY": VALUE})
    runtime = Runtime(client=mock_client(api), clock=FakeClock().clock(), interactive=False)
    return CliRunner().invoke(cli, ["get", "--server", SERVER, *args], obj=runtime)


def _files_holding_the_value(root: Path) -> list[Path]:
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if VALUE.encode() in path.read_bytes():
                found.append(path)
    return found


def test_get_stores_no_value_on_disk(home: Path) -> None:
    result = _invoke("--format", "json")

    assert result.exit_code == 0, result.stderr
    assert VALUE in result.stdout
    assert _files_holding_the_value(home) == []
    written = sorted(p.relative_to(home) for p in home.rglob("*") if p.is_file())
    # the pinned server key, and this terminal user's device key (issue #17): no value
    assert written == [Path("config/envcat/device_key"), Path("config/envcat/known_servers")]


def test_the_scan_finds_a_value_written_with_write(home: Path) -> None:
    result = _invoke("--write", ".env")

    assert result.exit_code == 0, result.stderr
    assert _files_holding_the_value(home) == [home / "work" / ".env"]
