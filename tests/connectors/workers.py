"""Real `celery -A envcat.workers worker -Q connectors` subprocesses for the connector tests
(and bench/connectors.py), configured only through their environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from envcat.core.settings import Settings

_SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        CELERY_BROKER_URL=settings.broker_url,
        BUNDLE_KMS_KEY=settings.kms_key_value(),
        DELIVERY_SIGNING_KEY=settings.signing_keyring_text(),
        BFF_SHARED_SECRET=settings.bff_shared_secret.get_secret_value(),
        REQUEST_TTL=str(settings.request_ttl),
        CONNECTOR_AWS_WRITE_TPS=str(settings.connector_aws_write_tps),
        LOG_LEVEL="WARNING",
    )
    return env


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
