"""The CLI run as a real subprocess: its argv and a clean environment with a private HOME."""

from __future__ import annotations

import os
import subprocess
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


def assert_waited(process: subprocess.Popen[str]) -> None:
    """A `envcat get --timeout N` that nobody approved: it waited, gave up (exit 3), printed
    nothing on stdout, and no grant delivered it."""
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert out == "" and "under grant" not in err


def run_envcat(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `envcat <args>` to the end as a real process; its output captured as text."""
    return subprocess.run(
        [*ENVCAT, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
