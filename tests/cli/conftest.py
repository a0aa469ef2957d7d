"""Fixtures for the CLI tests: no developer setting leaks in, no network is used."""

from __future__ import annotations

import pytest

from tests.cli.cli_fakes import FakeApi, FakeClock


@pytest.fixture(autouse=True)
def _no_envcat_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's ENVCAT_SERVER must not change what the tests see."""
    monkeypatch.delenv("ENVCAT_SERVER", raising=False)


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
