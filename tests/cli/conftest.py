"""Fixtures for the CLI tests: no developer setting leaks in, no network is used."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.cli_fakes import WORKSPACE, FakeApi, FakeClock


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer's settings must not change what the tests see.

    ENVCAT_SERVER is removed; the user config and known_servers live under
    tmp_path; the cwd is an empty directory (no .envcat.toml above it in
    tmp_path); the workspace is the fake API's.
    """
    for name in ("ENVCAT_SERVER", "ENVCAT_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("ENVCAT_WORKSPACE", WORKSPACE)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def known_servers(tmp_path: Path) -> Path:
    """The known_servers file the CLI uses in these tests."""
    return tmp_path / "config" / "envcat" / "known_servers"


@pytest.fixture
def api() -> FakeApi:
    """A fresh in-memory public API that approves at the first poll."""
    return FakeApi()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that advances only when the CLI sleeps."""
    return FakeClock()


@pytest.fixture
def unused_port() -> int:
    """A local TCP port that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
