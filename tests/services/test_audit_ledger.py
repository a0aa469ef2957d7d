"""Group commit of the audit events recorded after a reply (issue #22), on SQLite and
PostgreSQL with real threads: `append_all` chains several events under one lock and one
head read, and a `Ledger` writes events left while another caller's unit was committing
in one unit per workspace, never losing one, never forking the chain, and logging (not
raising) a unit the database refuses."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from envcat.core.settings import Settings
from envcat.models import Tenant, db
from envcat.services import audit
from envcat.services.transactions import transaction
from tests.support.api import audit_actions
from tests.support.audit_faults import refused_audit
from tests.support.settings import make_settings

TENANT, OTHER = "t-acme", "t-other"
CANARY = "sk-canary-ledger-details"
LOCKS = ("pg_advisory_xact_lock", "UPDATE audit_events SET id = id WHERE 0")


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """Both database backends for every test of this module."""
    return make_settings(database_url, redis_url, broker_url)


@pytest.fixture
def tenants(service_app: Flask) -> None:
    for tenant_id in (TENANT, OTHER):
        db.session.add(Tenant(id=tenant_id, name=tenant_id, kind="personal"))
    db.session.commit()


def _entry(action: str, target: str) -> audit.Entry:
    return audit.Entry("cli", action, target, details={"note": CANARY})


def _events(tenant_id: str) -> list[tuple[str, str]]:
    found = audit_actions(tenant_id)
    db.session.rollback()  # no read left open beside the threads' units
    return found


@contextmanager
def statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def on_statement(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", on_statement)


def test_append_all_chains_events_in_order_under_one_lock_and_head_read(
    tenants: None,
) -> None:
    audit.record(TENANT, "u-1", "test.first", "a")
    with statements() as seen, transaction():
        audit.append_all(TENANT, [_entry("test.batch", f"b{n}") for n in range(4)])
    assert sum(1 for s in seen if any(lock in s for lock in LOCKS)) == 1
    assert sum(1 for s in seen if s.lstrip().startswith("SELECT audit_events.hash")) == 1
    assert _events(TENANT) == [("test.first", "a")] + [("test.batch", f"b{n}") for n in range(4)]
    report = audit.verify_chain(TENANT)
    assert report.is_intact and report.events == 5
    with pytest.raises(RuntimeError, match="inside transaction"):
        audit.append_all(TENANT, [_entry("test.outside", "x")])


@contextmanager
def held_writer(
    app: Flask, ledger: audit.Ledger, tenant_id: str, entry: audit.Entry
) -> Iterator[threading.Event]:
    """A thread recording `entry` whose unit is held at its audit INSERT until the block
    ends; yields once it is held."""
    inside, release = threading.Event(), threading.Event()
    writer = threading.current_thread()  # replaced below by the writer thread

    def hold(*args: Any) -> None:
        if threading.current_thread() is writer and "INSERT INTO audit_events" in str(args[2]):
            inside.set()
            release.wait(30)

    def run() -> None:
        with app.app_context():
            ledger.record(tenant_id, entry)
            db.session.remove()

    thread = threading.Thread(target=run)
    writer = thread
    event.listen(db.engine, "before_cursor_execute", hold)
    try:
        thread.start()
        assert inside.wait(30), "the first record never reached its INSERT"
        yield release
    finally:
        release.set()
        thread.join(30)
        event.remove(db.engine, "before_cursor_execute", hold)
    assert not thread.is_alive()


@contextmanager
def waiting_in_threads(
    app: Flask, ledger: audit.Ledger, items: list[tuple[str, str, str]]
) -> Iterator[None]:
    """Record each (tenant, action, target) from its own thread while a unit is held:
    inside the block every one waits for it, holding no database connection; after the
    block (the unit released) every one has returned."""

    def run(tenant_id: str, action: str, target: str) -> None:
        with app.app_context():
            ledger.record(tenant_id, _entry(action, target))
            db.session.remove()

    threads = [threading.Thread(target=run, args=item) for item in items]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while ledger.waiting < len(items) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ledger.waiting == len(items)
    assert all(thread.is_alive() for thread in threads)  # group commit: they wait
    assert db.engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # QueuePool; only the held unit's connection
    yield
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a record was never written"


def test_events_left_while_a_unit_commits_are_written_together_after_it(
    service_app: Flask, tenants: None
) -> None:
    ledger = audit.Ledger("a test event")
    with statements() as seen, ExitStack() as stack:
        with held_writer(service_app, ledger, TENANT, _entry("test.delivered", "first")):
            # five deliveries finish while the first one's unit is held: they wait for it
            items = [(TENANT, "test.delivered", f"r{n}") for n in range(5)]
            stack.enter_context(waiting_in_threads(service_app, ledger, items))
        stack.close()  # and once it commits, one of them writes all five in one more unit
    assert sorted(_events(TENANT)) == sorted(
        [("test.delivered", "first")] + [("test.delivered", f"r{n}") for n in range(5)]
    )
    assert _events(TENANT)[0] == ("test.delivered", "first")
    assert sum(1 for s in seen if any(lock in s for lock in LOCKS)) == 2  # two units, not six
    report = audit.verify_chain(TENANT)
    assert report.is_intact and report.events == 6
    # the writer stopped: a later lone record is written at once by its own caller
    ledger.record(TENANT, _entry("test.delivered", "later"))
    assert _events(TENANT)[-1] == ("test.delivered", "later")


def test_a_refused_unit_is_logged_without_details_and_other_workspaces_are_written(
    service_app: Flask, tenants: None, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = audit.Ledger("a test event")
    caplog.set_level(logging.ERROR, logger="envcat.audit")
    first = _entry("test.delivered", "o1")
    # exits in reverse: the unit released, then the waiting threads joined, then the trigger
    with (
        refused_audit("test.refused"),
        ExitStack() as stack,
        held_writer(service_app, ledger, OTHER, first),
    ):
        items = [(TENANT, "test.refused", "lost-1"), (OTHER, "test.delivered", "o2")]
        stack.enter_context(waiting_in_threads(service_app, ledger, items))
    assert _events(OTHER) == [("test.delivered", "o1"), ("test.delivered", "o2")]
    assert _events(TENANT) == []  # refused by the database: logged, nothing half-written
    [logged] = [r for r in caplog.records if r.getMessage() == "could not audit a test event"]
    assert logged.tenant_id == TENANT and logged.id == ["lost-1"]  # type: ignore[attr-defined]
    assert logged.action == "test.refused"  # type: ignore[attr-defined]
    assert CANARY not in caplog.text  # the events' details never reach the log
    assert audit.verify_chain(OTHER).is_intact
    # the writer is free again: the next record writes itself
    ledger.record(TENANT, _entry("test.delivered", "after"))
    assert _events(TENANT) == [("test.delivered", "after")]
