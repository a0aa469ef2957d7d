"""The CLI run as a real subprocess: its argv and a clean environment with a private HOME."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.cli.cli_fakes import (
    WORKSPACE,
)

ENVCAT = [sys.executable, "-m", "envcat.cli.main"]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVCAT_", "XDG_"))}
    return {
        **env,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "ENVCAT_WORKSPACE": WORKSPACE,
        **extra,
    }
