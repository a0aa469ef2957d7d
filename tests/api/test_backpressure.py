"""Backpressure (issue #22): with the approvals queue at its limit, new work gets 503 busy.

No worker runs at first, so approvals pile up in the real Redis broker exactly as
they would behind workers that cannot keep up. The backlog sample's clock is
injected, so "a second later" is a step of the clock, not a sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from flask import Flask
from sqlalchemy import select

from envcat.api.backpressure import EXTENSION
from envcat.core.settings import Settings
from envcat.models import AuditEvent, db
from envcat.services.access_requests import store
from envcat.services.runtime import current
from envcat.workers.backlog import Backlog
from envcat.workers.factory import QUEUES
from tests.support.api import REQUESTS, Cli, SeedKey, seed_bundle
from tests.support.settings import make_settings

TENANT, LIMIT = "t-acme", 3


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, sqlite_url: str, redis_url: str, broker_url: str
) -> Settings:
    """APPROVAL_BACKLOG_LIMIT is LIMIT unless a test parametrizes `settings` indirectly."""
    limit = getattr(request, "param", LIMIT)
    return make_settings(sqlite_url, redis_url, broker_url, approval_backlog_limit=limit)


@pytest.fixture
def clock(api_app: Flask) -> Iterator[list[float]]:
    """The backlog sample's clock: step `clock[0]` to let the next call sample again."""
    now = [0.0]
    api_app.extensions[EXTENSION] = Backlog(api_app.extensions["celery"], clock=lambda: now[0])
    yield now


def _approve(signed: Any, cli: Cli, bundle_id: str) -> Any:
    return signed.post(
        f"{REQUESTS}/{cli.id}/encrypt-from-bundle",
        json={"bundle_id": bundle_id, "include_keys": ["TOKEN"]},
    )


def test_a_full_queue_refuses_new_work_and_records_nothing(
    api_app: Flask, signed_as: Any, clock: list[float]
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("TOKEN", "t")])
    queued = [Cli.start(api_app.test_client()) for _ in range(LIMIT)]
    refused = Cli.start(api_app.test_client())
    for cli in queued:
        assert _approve(owner, cli, bundle_id).status_code == 202
    clock[0] += 1.0  # the next call samples the queue again: LIMIT approvals wait

    reply = _approve(owner, refused, bundle_id)
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "5"
    body = reply.get_json()
    assert body["error"] == "busy"
    assert f"{LIMIT} approvals are waiting" in body["message"]
    stored = store.get(current().redis, refused.id)
    assert stored is not None and stored.approval is None  # still pending, nothing recorded
    approved_ids = db.session.execute(
        select(AuditEvent.target).where(AuditEvent.action == "request.approved")
    ).scalars()
    assert refused.id not in set(approved_ids)

    created = api_app.test_client().post(
        REQUESTS, json={"client_pubkey": refused.public_key, "workspace": TENANT}
    )
    assert created.status_code == 503
    assert created.get_json()["error"] == "busy"

    # Workers catch up; a second later the same calls succeed.
    with start_worker(
        api_app.extensions["celery"],
        pool="solo",
        queues=list(QUEUES),
        perform_ping_check=False,
        shutdown_timeout=30,
    ):
        for cli in queued:
            assert cli.wait(timeout=20).get_json()["status"] == "ready"
        clock[0] += 1.0
        assert _approve(owner, refused, bundle_id).status_code == 202
        assert refused.wait(timeout=20).get_json()["status"] == "ready"
    assert Cli.start(api_app.test_client()).id


def test_the_sample_is_reused_until_the_clock_moves(
    api_app: Flask, signed_as: Any, clock: list[float]
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("TOKEN", "t")])
    clis = [Cli.start(api_app.test_client()) for _ in range(LIMIT + 1)]
    # Sampled once (empty queue) before the first approval: the same second lets all through.
    assert all(_approve(owner, cli, bundle_id).status_code == 202 for cli in clis)
    clock[0] += 1.0
    assert (
        api_app.test_client()
        .post(REQUESTS, json={"client_pubkey": clis[0].public_key, "workspace": TENANT})
        .status_code
        == 503
    )


@pytest.mark.parametrize("settings", [0], indirect=True)
def test_a_limit_of_zero_never_refuses(api_app: Flask, signed_as: Any) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("TOKEN", "t")])
    for cli in [Cli.start(api_app.test_client()) for _ in range(LIMIT + 2)]:
        assert _approve(owner, cli, bundle_id).status_code == 202  # all of them queue
    assert Cli.start(api_app.test_client()).id
    assert EXTENSION not in api_app.extensions  # the broker was never asked


def test_a_broker_that_cannot_be_asked_refuses_nothing() -> None:
    unreachable = Celery("unreachable", broker="redis://127.0.0.1:1/0", set_as_current=False)
    assert Backlog(unreachable).depth() is None
