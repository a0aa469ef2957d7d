"""The `envcat` executable next to this interpreter and a clean environment to run it in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from envcat.core.settings import Settings

ENVCAT = Path(sys.executable).with_name("envcat")


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any EnvCat setting, plus `extra`."""
    names = {name.upper() for name in Settings.model_fields} | {"ENVCAT_SERVER", "ENVCAT_DATA_DIR"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, **extra}
