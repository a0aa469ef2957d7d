"""The whole request lifecycle: real api, real Redis, real database, real Celery worker."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import select

from envcat.models import AuditEvent, db
from envcat.services.access_requests import store
from tests.support import present
from tests.support.api import (
    REQUESTS,
    Cli,
    SeedKey,
    audit_actions,
    key_row,
    seed_bundle,
    wait_until_final,
)
from tests.support.requests import stored_request

TENANT = "t-acme"
OWNER = "u-owner"
KEYS = [
    SeedKey("DATABASE_URL", "postgres://db.internal/app", required=True),
    SeedKey("API_KEY", "sk-live-7f3a"),
    SeedKey("DEBUG", "false"),
    SeedKey("MULTILINE", "line one\nline 'two' $HOME \\ \"q\" ü"),
]


def _histogram_count() -> float:
    return REGISTRY.get_sample_value("envcat_approval_to_delivery_seconds_count") or 0.0


def _approve(signed: Any, request_id: str, bundle_id: str, keys: list[str]) -> Any:
    return signed.post(
        f"{REQUESTS}/{request_id}/encrypt-from-bundle",
        json={"bundle_id": bundle_id, "include_keys": keys},
    )


def test_lifecycle_delivers_exactly_the_selected_keys_in_bundle_order(
    api_app: Flask, signed_as: Any, celery_worker: object
) -> None:
    owner = signed_as(OWNER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cli = Cli.start(api_app.test_client(), bundle="production/api", template_keys=["API_KEY"])
    observed = _histogram_count()
    replies: list[Any] = []
    poller = threading.Thread(target=lambda: replies.append(cli.wait(timeout=20)))
    poller.start()
    time.sleep(0.2)

    approved = _approve(owner, cli.id, bundle_id, ["MULTILINE", "DATABASE_URL"])
    assert approved.status_code == 202
    assert approved.get_json() == {"ok": True}
    poller.join(timeout=20)

    (reply,) = replies
    assert reply.status_code == 200
    body = reply.get_json()
    assert set(body) == {"status", "ciphertext_base64"}
    values = cli.open(body)
    assert list(values.items()) == [
        ("DATABASE_URL", "postgres://db.internal/app"),
        ("MULTILINE", KEYS[3].value),
    ]
    assert cli.wait().status_code == 410  # exactly once
    assert audit_actions(TENANT) == [("request.approved", cli.id), ("request.delivered", cli.id)]
    approved_event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "request.approved")
    ).scalar_one()
    assert approved_event.actor == OWNER
    assert approved_event.details == {
        "bundle_id": bundle_id,
        "bundle_name": "production/api",
        "keys": ["DATABASE_URL", "MULTILINE"],
    }
    assert _histogram_count() == observed + 1


def test_exactly_one_of_twenty_concurrent_waiters_receives_the_ciphertext(
    api_app: Flask, signed_as: Any, celery_worker: object
) -> None:
    owner = signed_as(OWNER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cli = Cli.start(api_app.test_client())
    barrier = threading.Barrier(21)
    replies: list[Any] = []
    lock = threading.Lock()

    def waiter() -> None:
        own = Cli(api_app.test_client(), cli.private_key, cli.id, cli.poll_token)
        barrier.wait()
        reply = own.wait(timeout=20)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=waiter) for _ in range(20)]
    for thread in threads:
        thread.start()
    barrier.wait()
    time.sleep(0.3)
    assert _approve(owner, cli.id, bundle_id, ["DATABASE_URL"]).status_code == 202
    for thread in threads:
        thread.join(timeout=30)

    ready = [r for r in replies if r.status_code == 200 and r.get_json()["status"] == "ready"]
    assert len(replies) == 20
    assert len(ready) == 1
    assert cli.open(ready[0].get_json()) == {"DATABASE_URL": "postgres://db.internal/app"}
    # the others were replaced by a newer long poll (pending, took nothing) or found it gone
    others = [r for r in replies if r is not ready[0]]
    assert all(r.status_code == 410 or r.get_json() == {"status": "pending"} for r in others)
    assert cli.wait().status_code == 410
    assert audit_actions(TENANT).count(("request.delivered", cli.id)) == 1


def test_deny_wakes_the_cli_and_is_audited(
    api_app: Flask, signed_as: Any, celery_worker: object
) -> None:
    member = signed_as("u-member", TENANT, "member")
    cli = Cli.start(api_app.test_client())
    replies: list[Any] = []
    poller = threading.Thread(target=lambda: replies.append(cli.wait(timeout=20)))
    poller.start()
    time.sleep(0.2)
    started = time.monotonic()
    denied = member.post(f"{REQUESTS}/{cli.id}/deny")
    poller.join(timeout=10)
    assert denied.status_code == 200
    assert denied.get_json() == {"ok": True}
    assert replies[0].get_json() == {"status": "denied"}
    assert time.monotonic() - started < 1
    assert cli.wait().status_code == 410
    assert audit_actions(TENANT) == [("request.denied", cli.id)]


def test_a_key_that_no_longer_decrypts_fails_the_request_without_a_value(
    api_app: Flask, signed_as: Any, celery_worker: object
) -> None:
    owner = signed_as(OWNER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    # a ciphertext copied onto another row is bound to its own row and does not decrypt
    key_row(TENANT, "API_KEY").value = key_row(TENANT, "DEBUG").value
    db.session.commit()
    cli = Cli.start(api_app.test_client())
    assert _approve(owner, cli.id, bundle_id, ["DATABASE_URL", "API_KEY"]).status_code == 202

    reply = wait_until_final(cli)
    assert reply.get_json() == {
        "status": "failed",
        "message": "the value of API_KEY does not decrypt with the server's keyring",
    }
    assert cli.wait().status_code == 410
    assert audit_actions(TENANT) == [("request.approved", cli.id), ("request.failed", cli.id)]


def test_a_bundle_deleted_before_the_worker_runs_fails_the_request(
    api_app: Flask, signed_as: Any, celery_app: Any, redis_client: redis.Redis
) -> None:
    from celery.contrib.testing.worker import start_worker

    from envcat.models import Bundle
    from envcat.workers.factory import QUEUES

    owner = signed_as(OWNER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cli = Cli.start(api_app.test_client())
    assert _approve(owner, cli.id, bundle_id, ["DATABASE_URL"]).status_code == 202
    # the world changes between the approval and the task: the task re-checks
    db.session.delete(db.session.get(Bundle, bundle_id))
    db.session.commit()
    with start_worker(celery_app, pool="solo", queues=list(QUEUES), perform_ping_check=False):
        reply = wait_until_final(cli)
    assert reply.get_json() == {
        "status": "failed",
        "message": "the bundle was deleted after the approval",
    }


def test_cancel_after_approval_is_audited_in_the_approvers_tenant(
    api_app: Flask, signed_as: Any, celery_worker: object, redis_client: redis.Redis
) -> None:
    owner = signed_as(OWNER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cli = Cli.start(api_app.test_client())
    assert _approve(owner, cli.id, bundle_id, ["DATABASE_URL"]).status_code == 202
    deadline = time.monotonic() + 10
    while present(store.get(redis_client, cli.id)).status != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert cli.cancel().status_code == 204
    assert cli.wait().status_code == 410
    assert redis_client.zcard(store.UNCLAIMED_INDEX) == 0  # the sweep will not report it
    assert audit_actions(TENANT) == [
        ("request.approved", cli.id),
        ("request.cancelled", cli.id),
    ]


def test_an_approval_nobody_collects_expires_into_the_approvers_audit(
    api_app: Flask, signed_as: Any, celery_worker: object, redis_client: redis.Redis
) -> None:
    from envcat.workers import tasks

    owner = signed_as(OWNER, TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    # the store takes a TTL below the Settings minimum of 30 s, so the test stays short
    request, token = stored_request(redis_client, tenant_id=TENANT, ttl=2)
    assert _approve(owner, request.id, bundle_id, ["DATABASE_URL"]).status_code == 202
    time.sleep(max(0.0, request.expires_at - time.time()) + 0.1)
    tasks.sweep_expired_requests.delay()
    deadline = time.monotonic() + 10
    while ("request.expired", request.id) not in audit_actions(TENANT):
        assert time.monotonic() < deadline, audit_actions(TENANT)
        time.sleep(0.05)
    assert audit_actions(TENANT) == [
        ("request.approved", request.id),
        ("request.expired", request.id),
    ]
    gone = api_app.test_client().get(
        f"{REQUESTS}/{request.id}/wait", headers={"X-Poll-Token": token}
    )
    assert gone.status_code == 410
