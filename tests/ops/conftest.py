"""Helpers for the `envcat server …` tests: settings as environment, real subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from envcat.core.settings import Settings
from envcat.ops.config import settings_environment

ENVCAT = Path(sys.executable).with_name("envcat")


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any EnvCat setting, plus `extra`."""
    names = {name.upper() for name in Settings.model_fields} | {"ENVCAT_SERVER", "ENVCAT_DATA_DIR"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, **extra}


@pytest.fixture
def server_env(settings: Settings) -> dict[str, str]:
    """The test settings as the environment variables a server command reads."""
    return settings_environment(settings)
