"""PostgreSQL connections dropped in the middle of a transaction: rolled back, a clear
503, and the next call works without restarting anything.

A live stack (real api, worker and bff servers on loopback) runs on a fresh
PostgreSQL database. An import is made to block inside its transaction (after its
key rows are written, before the bundle links are): another connection holds an
EXCLUSIVE lock on `bundle_keys`. Every backend of the test database is then
terminated with pg_terminate_backend, as a failover or a DBA would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.hardening.snapshots import database_dump
from tests.support.settings import POSTGRES_ADMIN_URL
from tests.support.stack import LiveStack, live_stack

IMPORTED = {f"PG_DROP_{i}": f"value-{i}" for i in range(20)}


@pytest.fixture
def pg_stack(postgres_url: str, redis_url: str, broker_url: str) -> Iterator[LiveStack]:
    with live_stack(postgres_url, redis_url, broker_url) as stack:
        yield stack


def _owner(stack: LiveStack) -> tuple[httpx.Client, str]:
    account = stack.sign_up("pg-owner@example.test", "correct horse battery staple")
    client = stack.signed(account["user"]["id"], account["tenant"]["id"])
    reply = client.post("/api/v1/bundles", json={"name": "pg/drop"})
    assert reply.status_code == 201, reply.text
    return client, reply.json()["id"]


def _import(client: httpx.Client, bundle_id: str) -> httpx.Response:
    body = {"format": "json", "content": json.dumps(IMPORTED), "overwrite": False}
    return client.post(f"/api/v1/bundles/{bundle_id}/import", json=body)


def _wait_for_lock_waiter(admin: psycopg.Connection[Any], database: str) -> str:
    """Return the statement of the backend that waits on the lock, once there is one."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        waiting = admin.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (database,),
        ).fetchone()
        if waiting:
            return str(waiting[0])
        time.sleep(0.05)
    raise AssertionError("the import never blocked on bundle_keys")


def _libpq_url(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


def _call_while_connections_drop(
    postgres_url: str, call: Callable[[], httpx.Response]
) -> tuple[httpx.Response, int]:
    """Run `call` until it blocks inside its transaction, terminate every backend of the
    database, and return the call's reply and how many backends were terminated."""
    database = make_url(postgres_url).database
    replies: list[httpx.Response] = []
    with (
        psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin,
        psycopg.connect(_libpq_url(postgres_url)) as locker,
    ):
        locker.execute("LOCK TABLE bundle_keys IN EXCLUSIVE MODE")  # writes wait, reads go on
        caller = threading.Thread(target=lambda: replies.append(call()))
        caller.start()
        blocked = _wait_for_lock_waiter(admin, str(database))
        # Mid-transaction: its key rows are written, the links to the bundle are next.
        assert blocked.startswith("INSERT INTO bundle_keys"), blocked
        terminated = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> %s",
            (database, locker.info.backend_pid),
        ).fetchone()
        locker.rollback()
        caller.join(timeout=30)
    assert replies, "the call did not return"
    return replies[0], int(terminated[0]) if terminated else 0


@pytest.mark.slow
def test_dropped_connections_roll_back_answer_503_and_recover(
    pg_stack: LiveStack, postgres_url: str
) -> None:
    client, bundle_id = _owner(pg_stack)
    before = database_dump(postgres_url)
    reply, terminated = _call_while_connections_drop(
        postgres_url, lambda: _import(client, bundle_id)
    )
    assert terminated >= 1
    assert reply.status_code == 503, reply.text
    assert reply.json() == {
        "error": "unavailable",
        "message": "A backing service is unavailable; retry.",
    }
    assert database_dump(postgres_url) == before  # the key rows written before the drop are gone

    recovered = _import(client, bundle_id)  # the very next call, nothing restarted
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["created"] == list(IMPORTED)
    client.close()
