"""Fixtures for the `envcat server …` tests (helpers: tests/support/cli_env.py)."""

from __future__ import annotations

import pytest

from envcat.core.settings import Settings
from envcat.ops.config import settings_environment


@pytest.fixture
def server_env(settings: Settings) -> dict[str, str]:
    """The test settings as the environment variables a server command reads."""
    return settings_environment(settings)
