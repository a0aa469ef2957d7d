"""A worker SIGKILLed in the middle of encrypt_from_bundle loses nothing and delivers once.

Real `celery -A envcat.workers worker` subprocesses, configured only through their
environment, on private redis-servers (app data and broker apart, so the app one
can be paused alone). To kill the worker deterministically mid-task, app-data
writes are paused (`CLIENT PAUSE … WRITE`): the task reads the request, decrypts
and seals, then blocks on its final atomic write; it is killed right there.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.ops.config import settings_environment
from envcat.services.access_requests import store
from envcat.services.runtime import create_service_app
from envcat.workers.factory import create_celery
from tests.support import RedisServer, present, private_redis
from tests.support.api import SeedKey, seed_bundle
from tests.support.cli_env import clean_environment
from tests.support.databases import migrated
from tests.support.envelopes import open_delivery
from tests.support.requests import record_approval, stored_request
from tests.support.settings import make_settings
from tests.support.signed import add_member

TENANT, USER = "t-acme", "u-owner"
REQUEST_TTL = 30  # the Settings minimum; visibility_timeout = max(10, 30 * 0.2) = 10 s


def _eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    with private_redis(tmp_path / "app") as app, private_redis(tmp_path / "broker") as broker:
        yield app, broker


@pytest.fixture
def crash_settings(tmp_path: Path, servers: tuple[RedisServer, RedisServer]) -> Settings:
    app, broker = servers
    settings = make_settings(
        f"sqlite:///{tmp_path / 'envcat.db'}",
        f"{app.url}/0",
        f"{broker.url}/0",
        request_ttl=REQUEST_TTL,
    )
    migrated(settings.database_url)
    return settings


def _worker_env(settings: Settings) -> dict[str, str]:
    return clean_environment(**settings_environment(settings))


def _start_worker(settings: Settings, name: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "envcat.workers", "worker"]
    command += ["-Q", "approvals", "--pool", "solo", "-n", f"{name}@%h", "--loglevel", "INFO"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=_worker_env(settings), stdout=out, stderr=out)


def _ping(flask_app: Flask, r: redis.Redis, log: Path, seconds: float = 60) -> None:
    """Block until a worker answers a no-op task: it is up and consuming."""
    reply_key = f"test:ping:{uuid.uuid4().hex}"
    flask_app.extensions["celery_app"].tasks["envcat.ping"].delay(reply_key)
    started = time.monotonic()
    _eventually(lambda: r.llen(reply_key) > 0, seconds, "the worker to start")
    print(f"\nworker answered a ping after {time.monotonic() - started:.1f} s")


def _blocked_in_final_write(r: redis.Redis) -> bool:
    return any(c["cmd"] in ("eval", "evalsha") and "b" in c["flags"] for c in r.client_list())


@pytest.mark.slow
def test_a_worker_killed_mid_task_leads_to_exactly_one_delivery(
    crash_settings: Settings, servers: tuple[RedisServer, RedisServer], tmp_path: Path
) -> None:
    app_redis = redis.Redis.from_url(crash_settings.redis_url, decode_responses=True)
    broker = redis.Redis.from_url(crash_settings.broker_url, decode_responses=True)
    flask_app = create_service_app(crash_settings)
    flask_app.extensions["celery_app"] = celery = create_celery(crash_settings, flask_app)
    log = tmp_path / "workers.log"
    first = _start_worker(crash_settings, "first", log)
    second: subprocess.Popen[bytes] | None = None
    try:
        _ping(flask_app, app_redis, log)
        with flask_app.app_context():
            add_member(USER, TENANT)
            bundle_id = seed_bundle(
                TENANT, "production/api", [SeedKey("A", "alpha"), SeedKey("B", "beta")]
            )
        private_key = generate_keypair()
        with flask_app.app_context():
            request, token = stored_request(
                app_redis, tenant_id=TENANT, ttl=REQUEST_TTL, cli_pub=encode_public_key(private_key)
            )
            mac = record_approval(app_redis, request, USER, bundle_id, ["A", "B"])

        app_redis.client_pause(60_000, all=False)  # writes wait; reads go on
        celery.tasks["envcat.encrypt_from_bundle"].delay(request.id, mac)
        _eventually(lambda: broker.hlen("unacked") == 1, 20, "the worker to reserve the task")
        _eventually(lambda: _blocked_in_final_write(app_redis), 20, "the task to reach mark_ready")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.monotonic()
        app_redis.client_unpause()

        pending = store.get(app_redis, request.id)
        assert pending is not None and pending.status == "pending"  # nothing was delivered
        assert broker.hlen("unacked") == 1  # the message survived its worker

        second = _start_worker(crash_settings, "second", log)
        _eventually(
            lambda: present(store.get(app_redis, request.id)).status == "ready",
            40,
            "the redelivered task",
        )
        recovery = time.monotonic() - killed_at
        print(f"\nrecovery after SIGKILL: {recovery:.1f} s (visibility_timeout 10 s)")
        assert recovery < REQUEST_TTL

        result = store.take(app_redis, request.id, token)
        assert result.status == "ready"
        values = open_delivery(private_key, result.ciphertext or "")
        assert values == {"A": "alpha", "B": "beta"}
        assert store.take(app_redis, request.id, token).status == "gone"
        _eventually(lambda: broker.hlen("unacked") == 0, 10, "the redelivered message to be acked")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
        app_redis.close()
        broker.close()
