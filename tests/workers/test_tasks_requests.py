"""The request, sweep and rotation tasks on a real worker and a real broker."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import Celery, Task, signals
from celery.contrib.testing.worker import start_worker
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from envcat.core.keys import new_kms_key
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import db
from envcat.services import rotation
from envcat.services.access_requests import delivery, store
from envcat.services.runtime import create_service_app
from envcat.workers import tasks
from envcat.workers.factory import QUEUES, TASK_ROUTES, create_celery
from tests.support import present
from tests.support.api import SeedKey, audit_actions, seed_bundle
from tests.support.databases import migrated
from tests.support.requests import record_approval, stored_request
from tests.support.settings import make_settings
from tests.support.signed import add_member

TENANT, USER = "t-acme", "u-owner"


def _eventually(check: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _failures(task: str) -> float:
    return REGISTRY.get_sample_value("envcat_task_failures_total", {"task": task}) or 0.0


def _outdated_now() -> int:
    db.session.rollback()  # read what the worker committed, not an old snapshot
    return rotation.count_outdated()


MACS: dict[str, str] = {}


def _approved(
    r: redis.Redis, bundle_id: str, keys: list[str], cli_pub: str | None = None
) -> tuple[str, str]:
    cli_pub = cli_pub or encode_public_key(generate_keypair())
    request, token = stored_request(r, tenant_id=TENANT, cli_pub=cli_pub)
    MACS[request.id] = record_approval(r, request, USER, bundle_id, keys)
    return request.id, token


def test_tasks_are_named_routed_and_retry_only_transient_errors() -> None:
    routed: list[tuple[Task[Any, Any], str]] = [
        (tasks.encrypt_from_bundle, "approvals"),
        (tasks.sweep_expired_requests, "maintenance"),
        (tasks.rotate_kms, "maintenance"),
    ]
    for task, queue in routed:
        assert TASK_ROUTES[task.name]["queue"] == queue
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert set(task.autoretry_for) == {  # type: ignore[attr-defined]  # set by shared_task
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            OperationalError,
        }
        assert task.max_retries == 5
    assert tasks.ping.name == "envcat.ping"


def test_a_duplicated_message_delivers_once(
    service_app: Flask, celery_worker: object, redis_client: redis.Redis
) -> None:
    add_member(USER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("A", "a"), SeedKey("B", "b")])
    request_id, token = _approved(redis_client, bundle_id, ["A", "B"])
    for _ in range(3):  # as after a crash, a visibility timeout or a retry
        tasks.encrypt_from_bundle.delay(request_id, MACS[request_id])
    _eventually(lambda: present(store.get(redis_client, request_id)).status == "ready")
    time.sleep(0.3)  # let the duplicates run
    assert redis_client.zcard(store.UNCLAIMED_INDEX) == 1
    assert store.take(redis_client, request_id, token).status == "ready"
    assert store.take(redis_client, request_id, token).status == "gone"


def test_a_transient_database_error_is_retried_until_it_passes(
    service_app: Flask, celery_worker: object, redis_client: redis.Redis
) -> None:
    add_member(USER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("A", "a")])
    request_id, _ = _approved(redis_client, bundle_id, ["A"])
    retries: list[str] = []

    def on_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
        retries.append(type(getattr(reason, "exc", reason)).__name__)

    signals.task_retry.connect(on_retry, weak=False)
    db.session.execute(text("ALTER TABLE bundles RENAME TO bundles_away"))
    db.session.commit()
    try:
        tasks.encrypt_from_bundle.delay(request_id, MACS[request_id])
        _eventually(lambda: bool(retries))
    finally:
        db.session.execute(text("ALTER TABLE bundles_away RENAME TO bundles"))
        db.session.commit()
        signals.task_retry.disconnect(on_retry)
    assert retries[0] == "OperationalError"
    assert present(store.get(redis_client, request_id)).status == "pending"
    _eventually(lambda: present(store.get(redis_client, request_id)).status == "ready", seconds=40)


def test_a_bug_fails_the_request_at_once_instead_of_retrying(
    service_app: Flask, celery_worker: object, redis_client: redis.Redis
) -> None:
    add_member(USER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("A", "a")])
    # damaged state that validation would never let in (MACed, so it passes the integrity
    # check): sealing raises an unexpected error
    short_key = base64.b64encode(b"\x01" * 31).decode()  # 31 bytes: no X25519 key
    request_id, _ = _approved(redis_client, bundle_id, ["A"], cli_pub=short_key)
    failures = _failures(tasks.encrypt_from_bundle.name)
    tasks.encrypt_from_bundle.delay(request_id, MACS[request_id])
    _eventually(lambda: present(store.get(redis_client, request_id)).status == "failed")
    # The failure is counted just after the request is marked (a loaded machine may lag).
    _eventually(lambda: _failures(tasks.encrypt_from_bundle.name) == failures + 1)
    time.sleep(1.5)  # a retry would have run by now
    assert _failures(tasks.encrypt_from_bundle.name) == failures + 1
    assert redis_client.hget(store.request_key(request_id), "msg") == delivery.INTERNAL_FAILURE
    assert audit_actions(TENANT) == [("request.failed", request_id)]


def test_rotate_kms_runs_batches_on_the_maintenance_queue(
    tmp_path: Path, redis_url: str, broker_url: str
) -> None:
    from tests.support.rotation import seed_values

    old_key, new_key = new_kms_key(), new_kms_key()
    database_url = f"sqlite:///{tmp_path / 'rotate.db'}"
    migrated(database_url)
    seed_values(
        create_service_app(
            make_settings(database_url, redis_url, broker_url, bundle_kms_key=old_key)
        ),
        {f"K{i}": "v" for i in range(5)},
    )
    settings = make_settings(
        database_url, redis_url, broker_url, bundle_kms_key=f"{new_key},{old_key}"
    )
    app = create_service_app(settings)
    celery: Celery = create_celery(settings, app)
    with app.app_context():
        assert rotation.count_outdated() == 5
        with start_worker(celery, pool="solo", queues=list(QUEUES), perform_ping_check=False):
            for _ in range(3):
                celery.tasks["envcat.rotate_kms"].delay(2)
            _eventually(lambda: _outdated_now() == 0)
        db.engine.dispose()
