"""Fixtures for workload identities: a loopback OIDC issuer and settings that trust http on
loopback (the one stand-in: the real issuer, e.g. GitHub, lives outside this machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from envcat.core.settings import Settings
from tests.support.settings import make_settings
from tests.workloads.issuer import OIDC_SETTINGS, LoopbackIssuer


@pytest.fixture
def issuer() -> Iterator[LoopbackIssuer]:
    running = LoopbackIssuer().start()
    yield running
    running.stop()


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """SQLite and PostgreSQL (policies and tokens are JSON columns on both)."""
    return make_settings(database_url, redis_url, broker_url, **OIDC_SETTINGS)
