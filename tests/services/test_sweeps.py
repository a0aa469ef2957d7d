"""The expiry sweep against a real Redis and database: bounded, and each request handled once."""

from __future__ import annotations

import math
import threading
import time

import pytest
import redis
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import db
from envcat.services.access_requests import store, sweep
from tests.support.api import audit_actions
from tests.support.requests import TEST_IP, expire_now, stored_request

TENANT = "t-acme"


def _expired_metric(stage: str) -> float:
    return REGISTRY.get_sample_value("envcat_requests_expired_total", {"stage": stage}) or 0.0


def _new(r: redis.Redis, ttl: int = 1) -> store.AccessRequest:
    request, _ = stored_request(r, tenant_id=TENANT, ttl=ttl)
    return request


def _approval(user: str, tenant: str, bundle: str) -> store.Approval:
    return store.Approval(tenant, user, bundle, ("A",), time.time())


def _approved_and_uncollected(r: redis.Redis, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        request = _new(r)
        assert store.mark_ready(
            r,
            request.id,
            ciphertext_b64="c2VhbGVk",
            approval=_approval("u1", TENANT, "b1"),
        )
        ids.append(request.id)
    return ids


def test_sweep_prunes_expired_pending_requests_in_batches(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    short = [_new(redis_client).id for _ in range(5)]
    alive = _new(redis_client, ttl=60)
    before = _expired_metric("pending")
    later = expire_now(redis_client, *short)
    report = sweep.sweep_expired_requests(batch_size=2, now=later)
    assert (report.pruned, report.unclaimed) == (5, 0)
    assert _expired_metric("pending") == before + 5
    assert REGISTRY.get_sample_value("envcat_pending_requests") == 1
    assert redis_client.zrange(store.tenant_pending_key(TENANT), 0, -1) == [
        store.pending_member(alive.id, TEST_IP)
    ]
    # the workspace stays in the directory, scored by what is left: the live request's expiry
    assert redis_client.zscore(store.PENDING_TENANTS, TENANT) == math.ceil(alive.expires_at)
    assert sweep.sweep_expired_requests(now=later) == sweep.SweepReport(pruned=0, unclaimed=0)
    assert db.session.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 0


def test_sweep_audits_each_uncollected_approval_once_even_when_run_concurrently(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    ids = _approved_and_uncollected(redis_client, 12)
    before = _expired_metric("unclaimed")
    later = expire_now(redis_client, *ids)
    reports: list[sweep.SweepReport] = []
    barrier = threading.Barrier(3)

    def run_sweep() -> None:
        with service_app.app_context():
            barrier.wait()
            reports.append(sweep.sweep_expired_requests(batch_size=2, now=later))

    threads = [threading.Thread(target=run_sweep) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(r.unclaimed for r in reports) == 12
    assert sorted(target for _, target in audit_actions(TENANT)) == sorted(ids)
    assert {action for action, _ in audit_actions(TENANT)} == {"request.expired"}
    assert _expired_metric("unclaimed") == before + 12
    assert sweep.sweep_expired_requests(now=later).unclaimed == 0  # a later run finds none


def test_a_collected_or_cancelled_approval_is_not_reported(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    pub = encode_public_key(generate_keypair())
    collected, collected_token = stored_request(redis_client, tenant_id=TENANT, ttl=1, cli_pub=pub)
    cancelled, cancelled_token = stored_request(redis_client, tenant_id=TENANT, ttl=1, cli_pub=pub)
    for request in (collected, cancelled):
        store.mark_ready(
            redis_client,
            request.id,
            ciphertext_b64="x",
            approval=_approval("u1", TENANT, "b"),
        )
    assert store.take(redis_client, collected.id, collected_token).status == "ready"
    assert store.cancel_request(redis_client, cancelled.id, cancelled_token).outcome == "cancelled"
    later = expire_now(redis_client, collected.id, cancelled.id)
    assert sweep.sweep_expired_requests(now=later).unclaimed == 0
    assert audit_actions(TENANT) == []


def test_a_database_failure_gives_the_claims_back_for_the_next_sweep(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    ids = _approved_and_uncollected(redis_client, 3)
    later = expire_now(redis_client, *ids)
    db.session.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
    db.session.commit()
    with pytest.raises(OperationalError):
        sweep.sweep_expired_requests(now=later)
    assert redis_client.zcard(store.UNCLAIMED_INDEX) == 3
    db.session.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
    db.session.commit()
    assert sweep.sweep_expired_requests(now=later).unclaimed == 3
    assert sorted(target for _, target in audit_actions(TENANT)) == sorted(ids)
