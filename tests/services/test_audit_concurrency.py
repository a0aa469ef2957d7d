"""Several processes, each with its own database connection, append to ONE tenant's audit
chain while writing the changes the events record (issue #13), on a SQLite file and on
PostgreSQL: no fork, no lost event, the chain verifies, every change has its event."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from envcat.models import AuditEvent, Bundle, Tenant, db
from envcat.services import audit
from envcat.services.runtime import create_service_app
from envcat.services.transactions import transaction
from tests.support.audit_faults import chain_is_free, write_chain
from tests.support.databases import migrated
from tests.support.settings import make_settings

TENANT = "t-race"
WRITERS, ROUNDS = 4, 8


@pytest.fixture
def chain_db(database_url: str, redis_url: str) -> Iterator[Flask]:
    migrated(database_url)
    app = create_service_app(make_settings(database_url, redis_url, None))
    with app.app_context():
        db.session.add(Tenant(id=TENANT, name=TENANT, kind="org"))
        db.session.commit()
        yield app
        db.session.remove()
        db.engine.dispose()


def test_concurrent_units_of_work_keep_one_chain_and_every_change_its_event(
    chain_db: Flask, database_url: str, redis_url: str
) -> None:
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no shared connection
    barrier = spawn.Barrier(WRITERS)
    writers = [
        spawn.Process(
            target=write_chain, args=(database_url, redis_url, TENANT, w, ROUNDS, barrier)
        )
        for w in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=240)
    assert [w.exitcode for w in writers] == [0] * WRITERS  # no writer failed or was refused

    report = audit.verify_chain(TENANT)
    assert report.is_intact
    rows = db.session.execute(
        select(AuditEvent.action, AuditEvent.target, AuditEvent.prev_hash).where(
            AuditEvent.tenant_id == TENANT
        )
    ).all()
    assert report.events == len(rows) == WRITERS * ROUNDS * 3  # no lost event
    assert len({row.prev_hash for row in rows}) == len(rows)  # no fork
    # every change has exactly its event, and no event names a change that is not there
    bundle_ids = set(
        db.session.execute(select(Bundle.id).where(Bundle.tenant_id == TENANT)).scalars()
    )
    assert len(bundle_ids) == WRITERS * ROUNDS
    per_action = Counter((row.action, row.target) for row in rows)
    for action in ("bundle.created", "bundle.updated", "test.read"):
        assert {t for (a, t) in per_action if a == action} == {f"bundle:{b}" for b in bundle_ids}
    assert set(per_action.values()) == {1}


def test_the_chain_head_is_locked_from_append_to_commit(chain_db: Flask, database_url: str) -> None:
    """The experiment behind the SQLite lock: pysqlite (legacy transaction mode) reads
    outside a transaction, so a read of the head takes no lock; append takes the write lock
    (SQLite) or the chain's advisory lock (PostgreSQL) and holds it until the commit."""
    with transaction():
        db.session.execute(select(AuditEvent.hash).where(AuditEvent.tenant_id == TENANT)).all()
        assert chain_is_free(database_url, TENANT)  # a read alone locks nothing
        audit.append(TENANT, "u-0", "test.locked")
        assert not chain_is_free(database_url, TENANT)
    assert chain_is_free(database_url, TENANT)
    assert audit.verify_chain(TENANT).events == 1
