"""Real worker processes: a worker SIGKILLed mid-sync leaves a run that the next worker
finishes with the exact result (no duplicate provider versions, one audit event), and
three workers together never write faster than the configured per-second limit."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from flask import Flask
from sqlalchemy import func, select

from envcat.core.settings import Settings
from envcat.models import AuditEvent, Key, KeyVersion, db
from envcat.services.connectors import links
from envcat.services.runtime import create_service_app
from envcat.workers import connector_tasks
from envcat.workers.factory import create_celery
from tests.connectors.support import (
    WRITES,
    ProviderProxy,
    aws,
    aws_connection,
    bundle_with,
    link,
    link_row,
    owner,
)
from tests.connectors.workers import eventually, start_worker, stop
from tests.support import private_redis
from tests.support.databases import migrated
from tests.support.settings import make_settings

REQUEST_TTL = 30  # visibility_timeout = max(10, 30 * 0.2) = 10 s


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Settings, Flask, Celery]]:
    with private_redis(tmp_path / "app") as app, private_redis(tmp_path / "broker") as broker:
        settings = make_settings(
            f"sqlite:///{tmp_path / 'envcat.db'}",
            f"{app.url}/0",
            f"{broker.url}/0",
            request_ttl=REQUEST_TTL,
            connector_aws_write_tps=20.0,
        )
        migrated(settings.database_url)
        flask_app = create_service_app(settings)
        celery = create_celery(settings, flask_app)
        with flask_app.app_context():
            yield settings, flask_app, celery


def _queue(celery: Celery, link_id: str) -> str:
    run_id = links.start_run("t-conn", link_id)
    connector_tasks.sync_link.delay(link_id, run_id)
    return run_id


def _done(link_id: str) -> bool:
    row = link_row(link_id)
    return row.run_id is None and row.last_status != "queued"


@pytest.mark.slow
def test_a_worker_killed_mid_push_is_finished_exactly_by_the_next(
    stack: tuple[Settings, Flask, Celery], proxy: ProviderProxy, tmp_path: Path
) -> None:
    settings, _, celery = stack
    actor = owner()
    values = {f"KEY_{i:03d}": f"value-{i}" for i in range(60)}
    bundle_id = bundle_with(actor, "app", values)
    link_id = link(
        actor, aws_connection(actor, proxy.url), bundle_id, prefix="app/", direction="push"
    )
    proxy.latency = 0.05
    log = tmp_path / "workers.log"
    first = start_worker(settings, "first", log)
    second: subprocess.Popen[bytes] | None = None
    try:
        run_id = _queue(celery, link_id)

        def writes() -> int:
            return sum(proxy.actions()[a] for a in WRITES)

        eventually(lambda: writes() >= 20, 60, "the first worker to be half-way")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at, written_before = time.monotonic(), writes()
        assert written_before < len(values)
        assert link_row(link_id).run_id == run_id  # unfinished, not lost

        second = start_worker(settings, "second", log)
        eventually(lambda: _done(link_id), 90, "the redelivered run")
        print(f"\nrecovery after SIGKILL: {time.monotonic() - killed_at:.1f} s")
    finally:
        stop(first)
        stop(second)
    row = link_row(link_id)
    assert row.last_status == "ok", row.last_error
    client = aws(proxy.upstream)
    for name, value in values.items():
        assert client.get_secret_value(SecretId=f"app/{name}")["SecretString"] == value
        assert len(client.list_secret_version_ids(SecretId=f"app/{name}")["Versions"]) == 1
    db.session.expire_all()
    [event] = (
        db.session.execute(select(AuditEvent).where(AuditEvent.action == "connector.pushed"))
        .scalars()
        .all()
    )
    assert event.details["run_id"] == run_id
    assert sorted(k["name"] for k in event.details["keys"]) == sorted(values)


@pytest.mark.slow
def test_three_workers_never_exceed_the_write_limit(
    stack: tuple[Settings, Flask, Celery], proxy: ProviderProxy, tmp_path: Path
) -> None:
    settings, _, celery = stack
    actor = owner()
    connection_id = aws_connection(actor, proxy.url)
    link_ids = [
        link(
            actor,
            connection_id,
            bundle_with(actor, f"b{n}", {f"K{n}_{i}": f"v{i}" for i in range(40)}),
            prefix=f"b{n}/",
            direction="push",
        )
        for n in range(3)
    ]
    log = tmp_path / "workers.log"
    workers = [start_worker(settings, f"w{n}", log) for n in range(3)]
    try:
        for link_id in link_ids:
            _queue(celery, link_id)
        eventually(lambda: all(_done(i) for i in link_ids), 120, "three syncs")
    finally:
        for worker in workers:
            stop(worker)
    assert all(link_row(i).last_status == "ok" for i in link_ids)
    writes = sum(proxy.actions()[a] for a in WRITES)
    assert writes == 120
    peak = proxy.peak_per_second()
    print(f"\npeak writes/s seen by the provider with 3 workers: {peak} (limit 20)")
    assert 10 <= peak <= settings.connector_aws_write_tps


@pytest.mark.slow
def test_a_worker_killed_mid_pull_is_finished_exactly_by_the_next(
    stack: tuple[Settings, Flask, Celery], proxy: ProviderProxy, tmp_path: Path
) -> None:
    settings, _, celery = stack
    client = aws(proxy.upstream)
    total = 600
    for i in range(total):
        client.create_secret(Name=f"src/KEY_{i:04d}", SecretString=f"value-{i}")
    actor = owner()
    bundle_id = bundle_with(actor, "pulled", {})
    link_id = link(
        actor, aws_connection(actor, proxy.url), bundle_id, prefix="src/", direction="pull"
    )
    log = tmp_path / "workers.log"
    first = start_worker(settings, "first", log)
    second: subprocess.Popen[bytes] | None = None

    def pulled() -> int:
        db.session.expire_all()
        return int(db.session.execute(select(func.count()).select_from(Key)).scalar_one())

    try:
        run_id = _queue(celery, link_id)
        eventually(lambda: pulled() >= 50, 90, "the first batch of keys")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert pulled() < total  # killed half-way
        second = start_worker(settings, "second", log)
        eventually(lambda: _done(link_id), 90, "the redelivered run")
    finally:
        stop(first)
        stop(second)
    assert link_row(link_id).last_status == "ok"
    db.session.expire_all()
    assert pulled() == total
    versions = db.session.execute(
        select(KeyVersion.key_id, func.count()).group_by(KeyVersion.key_id)
    ).all()
    assert len(versions) == total and {count for _, count in versions} == {1}
    [event] = (
        db.session.execute(select(AuditEvent).where(AuditEvent.action == "connector.pulled"))
        .scalars()
        .all()
    )
    assert event.details["run_id"] == run_id and len(event.details["keys"]) == total
