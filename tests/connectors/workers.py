"""Real `celery -A envcat.workers worker -Q connectors` subprocesses for the connector tests
(and bench/connectors.py), configured only through their environment."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from envcat.core.settings import Settings
from envcat.ops.config import settings_environment
from tests.support.cli_env import clean_environment


def worker_env(settings: Settings) -> dict[str, str]:
    """This environment without EnvCat settings, plus every setting of `settings`."""
    return clean_environment(**{**settings_environment(settings), "LOG_LEVEL": "WARNING"})


def start_worker(settings: Settings, name: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "envcat.workers", "worker"]
    command += ["-Q", "connectors", "--pool", "solo", "-n", f"{name}@%h"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=worker_env(settings), stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
