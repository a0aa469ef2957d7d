"""POST /api/v1/webhooks/clerk with real Svix signatures, a real broker and a real worker."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import redis
from celery import _state as celery_state
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from envcat.api import create_app
from envcat.core.settings import Settings
from envcat.models import User, WebhookEvent, db
from envcat.services.provisioning import placeholder_email
from tests.support import free_port
from tests.support.clerk_events import (
    clerk_event,
    deleted_data,
    membership_data,
    new_id,
    org_data,
    user_data,
)
from tests.support.databases import migrated
from tests.support.settings import make_settings
from tests.support.webhooks import (
    URL,
    WEBHOOK_SECRET,
    api_on,
    post_event,
    processed,
    send_and_wait,
    sign,
    signed,
    wait_until,
)

QUEUE = "provisioning"


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(sqlite_url, redis_url, broker_url, clerk_webhook_secret=WEBHOOK_SECRET)


@pytest.fixture
def broker(broker_url: str) -> Iterator[redis.Redis]:
    """The broker's Redis, with the provisioning queue emptied for this test."""
    client = redis.Redis.from_url(broker_url)
    for key in client.scan_iter(f"{QUEUE}*"):
        client.delete(key)
    yield client
    client.close()


def queued(broker: redis.Redis) -> int:
    """Messages waiting in the provisioning queue (every priority list kombu keeps)."""
    return sum(int(broker.llen(key)) for key in broker.scan_iter(f"{QUEUE}*"))


def stored_events() -> int:
    db.session.rollback()
    return int(db.session.execute(select(func.count()).select_from(WebhookEvent)).scalar_one())


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("envcat_webhooks_received_total", {"outcome": outcome})
    return value or 0.0


# ------------------------------------------------------------ happy paths, end to end


@pytest.mark.usefixtures("celery_worker")
def test_user_created_is_provisioned_and_visible_through_me(
    api_app: Flask, settings: Settings, broker: redis.Redis
) -> None:
    uid, msg_id = new_id("user"), new_id("msg")
    started = time.perf_counter()
    response = post_event(api_app, "user.created", user_data(uid), msg_id=msg_id)
    assert time.perf_counter() - started < 1.0
    assert (response.status_code, response.json) == (
        202,
        {"ok": True, "duplicate": False, "ignored": False},
    )
    wait_until(lambda: processed(msg_id))
    me = signed(api_app, settings, uid, uid).get("/api/v1/me")
    assert me.status_code == 200, me.json
    assert me.json == {
        "user": {"id": uid, "email": f"{uid.lower()}@example.test", "name": "Ada Lovelace"},
        "tenant": {"id": uid, "name": "Ada Lovelace", "kind": "personal", "slug": "ada-lovelace"},
        "role": "owner",
    }


@pytest.mark.usefixtures("celery_worker")
def test_org_role_change_takes_effect_on_the_next_signed_call(
    api_app: Flask, settings: Settings, broker: redis.Redis
) -> None:
    uid, org = new_id("user"), new_id("org")
    send_and_wait(api_app, "user.created", user_data(uid))
    send_and_wait(api_app, "organization.created", org_data(org, "Acme"))
    send_and_wait(
        api_app, "organizationMembership.created", membership_data(org, uid, updated_at=2)
    )
    client = signed(api_app, settings, uid, org)
    me = client.get("/api/v1/me").get_json()
    assert (me["tenant"], me["role"]) == (
        {"id": org, "name": "Acme", "kind": "org", "slug": "acme"},
        "member",
    )
    assert client.post("/api/v1/bundles", {"name": "production/api"}).status_code == 403
    send_and_wait(
        api_app,
        "organizationMembership.updated",
        membership_data(org, uid, "org:admin", updated_at=3),
    )
    created = client.post("/api/v1/bundles", {"name": "production/api"})
    assert created.status_code == 201, created.json
    assert client.get("/api/v1/me").get_json()["role"] == "admin"


@pytest.mark.usefixtures("celery_worker")
def test_out_of_order_update_after_delete_is_ignored(
    api_app: Flask, settings: Settings, broker: redis.Redis
) -> None:
    uid = new_id("user")
    send_and_wait(api_app, "user.created", user_data(uid, updated_at=1_000))
    assert signed(api_app, settings, uid, uid).get("/api/v1/me").status_code == 200
    send_and_wait(api_app, "user.deleted", deleted_data(uid))
    send_and_wait(api_app, "user.updated", user_data(uid, first="Back", updated_at=9_000))
    user = db.session.get(User, uid)
    assert user is not None and user.deleted_at is not None
    assert (user.name, user.email) == (None, placeholder_email(uid))
    assert signed(api_app, settings, uid, uid).get("/api/v1/me").status_code == 404


# ------------------------------------------------------------ refusals: nothing stored or queued

FIVE_MINUTES_AND_A_BIT = timedelta(minutes=5, seconds=10)


def _stale(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return sign(body, at=datetime.now(UTC) - FIVE_MINUTES_AND_A_BIT)


def _future(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return sign(body, at=datetime.now(UTC) + FIVE_MINUTES_AND_A_BIT)


def _other_secret(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return sign(body, secret="whsec_" + base64.b64encode(b"x" * 24).decode())


def _body_changed(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"Ada", b"Eve"), headers


def _without(name: str) -> Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]:
    def tamper(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return body, {k: v for k, v in headers.items() if k != name}

    return tamper


def _header(
    name: str, value: str
) -> Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]:
    def tamper(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return body, {**headers, name: value}

    return tamper


def _not_utf8(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return b"\xff\xfe" + body, headers


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_stale, id="stale-timestamp"),
        pytest.param(_future, id="future-timestamp"),
        pytest.param(_other_secret, id="other-secret"),
        pytest.param(_body_changed, id="body-changed-after-signing"),
        pytest.param(_without("svix-id"), id="no-svix-id"),
        pytest.param(_without("svix-timestamp"), id="no-svix-timestamp"),
        pytest.param(_without("svix-signature"), id="no-svix-signature"),
        pytest.param(_header("svix-id", "msg_someone_else"), id="other-svix-id"),
        pytest.param(_header("svix-signature", "v1"), id="signature-without-comma"),
        pytest.param(_header("svix-signature", "v1,not-base64!"), id="signature-not-base64"),
        pytest.param(_header("svix-timestamp", "yesterday"), id="timestamp-not-a-number"),
        pytest.param(_not_utf8, id="body-not-utf8"),
    ],
)
def test_bad_signatures_are_refused_and_nothing_is_stored_or_queued(
    api_app: Flask, broker: redis.Redis, tamper: Callable[..., tuple[bytes, dict[str, str]]]
) -> None:
    body, headers = sign(clerk_event("user.created", user_data(new_id("user"))))
    body, headers = tamper(body, headers)
    before = counted("rejected")
    response = api_app.test_client().post(URL, data=body, headers=headers)
    assert response.status_code == 401
    assert response.json is not None and response.json["error"] == "invalid_signature"
    assert stored_events() == 0
    assert queued(broker) == 0
    assert counted("rejected") == before + 1


def test_several_signatures_in_the_header_verify_when_one_matches(
    api_app: Flask, broker: redis.Redis
) -> None:
    body, headers = sign(clerk_event("user.created", user_data(new_id("user"))))
    headers["svix-signature"] = "v1,d3Jvbmc= " + headers["svix-signature"]
    assert api_app.test_client().post(URL, data=body, headers=headers).status_code == 202
    assert queued(broker) == 1


def test_missing_secret_answers_503_and_stores_nothing(
    sqlite_url: str, redis_url: str, broker_url: str, broker: redis.Redis
) -> None:
    migrated(sqlite_url)
    app = create_app(make_settings(sqlite_url, redis_url, broker_url))
    with app.app_context():
        response = post_event(app, "user.created", user_data(new_id("user")))
        assert response.status_code == 503
        assert response.json is not None and response.json["error"] == "unavailable"
        assert "CLERK_WEBHOOK_SECRET" in response.json["message"]
        assert stored_events() == 0
    assert queued(broker) == 0


# ------------------------------------------------------------ duplicates and odd deliveries


def test_duplicate_delivery_is_acknowledged_and_enqueued_once(
    api_app: Flask, broker: redis.Redis
) -> None:
    body, headers = sign(clerk_event("user.created", user_data(new_id("user"))))
    first = api_app.test_client().post(URL, data=body, headers=headers)
    before = counted("duplicate")
    again = api_app.test_client().post(URL, data=body, headers=headers)
    assert first.json == {"ok": True, "duplicate": False, "ignored": False}
    assert (again.status_code, again.json) == (
        202,
        {"ok": True, "duplicate": True, "ignored": False},
    )
    assert (stored_events(), queued(broker)) == (1, 1)
    assert counted("duplicate") == before + 1


def test_stale_unprocessed_delivery_is_enqueued_again_on_retry(
    api_app: Flask, broker: redis.Redis
) -> None:
    """The api died between commit and enqueue: Svix's later retry must repair it."""
    body, headers = sign(clerk_event("user.created", user_data(new_id("user"))))
    assert api_app.test_client().post(URL, data=body, headers=headers).status_code == 202
    assert queued(broker) == 1
    for key in broker.scan_iter(f"{QUEUE}*"):  # the message is lost; the row stays unprocessed
        broker.delete(key)
    retry = api_app.test_client().post(URL, data=body, headers=headers)
    assert retry.get_json()["duplicate"] is True  # fresh: a twin, not a loss
    db.session.execute(
        update(WebhookEvent).values(received_at=datetime.now(UTC) - timedelta(minutes=10))
    )
    db.session.commit()
    retry = api_app.test_client().post(URL, data=body, headers=headers)
    assert (retry.status_code, retry.get_json()["duplicate"]) == (202, False)
    assert (stored_events(), queued(broker)) == (1, 1)
    again = api_app.test_client().post(URL, data=body, headers=headers)
    assert again.get_json()["duplicate"] is True


def test_concurrent_deliveries_of_one_event_are_enqueued_once(
    database_url: str, settings: Settings, broker: redis.Redis
) -> None:
    app = api_on(database_url, settings)
    body, headers = sign(clerk_event("user.created", user_data(new_id("user"))))
    senders = 8
    barrier = threading.Barrier(senders)

    def deliver(_: int) -> tuple[int, bool]:
        client = app.test_client()
        barrier.wait()
        response = client.post(URL, data=body, headers=headers)
        return response.status_code, bool(response.json and response.json["duplicate"])

    with ThreadPoolExecutor(senders) as pool:
        results = list(pool.map(deliver, range(senders)))
    assert [status for status, _ in results] == [202] * senders
    assert sorted(duplicate for _, duplicate in results) == [False] + [True] * (senders - 1)
    assert queued(broker) == 1
    with app.app_context():
        assert stored_events() == 1
        db.engine.dispose()


def test_unknown_event_type_is_acknowledged_and_ignored(
    api_app: Flask, broker: redis.Redis
) -> None:
    before = counted("ignored")
    response = post_event(api_app, "session.created", {"id": "sess_1", "object": "session"})
    assert (response.status_code, response.json) == (
        202,
        {"ok": True, "duplicate": False, "ignored": True},
    )
    assert (stored_events(), queued(broker)) == (0, 0)
    assert counted("ignored") == before + 1


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        json.dumps({"type": "user.created"}).encode(),
        json.dumps(clerk_event("user.created", {"id": "user_1"})).encode(),
        json.dumps(clerk_event("user.created", user_data("user with spaces"))).encode(),
    ],
    ids=["not-json", "array", "no-data", "missing-fields", "bad-id"],
)
def test_signed_but_malformed_events_are_400_and_not_stored(
    api_app: Flask, broker: redis.Redis, payload: bytes
) -> None:
    body, headers = sign(payload)
    response = api_app.test_client().post(URL, data=body, headers=headers)
    assert response.status_code == 400
    assert response.json is not None and response.json["error"] == "validation_error"
    assert b"user with spaces" not in response.data  # the rejected input is not echoed
    assert (stored_events(), queued(broker)) == (0, 0)


def test_only_the_fields_provisioning_needs_reach_the_broker(
    api_app: Flask, broker: redis.Redis
) -> None:
    response = post_event(api_app, "user.created", user_data(new_id("user")))
    assert response.status_code == 202
    messages = [m for key in broker.scan_iter(f"{QUEUE}*") for m in broker.lrange(key, 0, -1)]
    assert len(messages) == 1
    message = json.loads(messages[0])
    assert b"never stored" not in base64.b64decode(message["body"])
    # Worker logs show the task's argsrepr: ids only, no emails or names.
    assert "example.test" not in message["headers"]["argsrepr"]
    assert "Lovelace" not in message["headers"]["argsrepr"]


def test_broker_down_unrecords_the_delivery_so_the_retry_is_accepted(
    settings: Settings, broker: redis.Redis
) -> None:
    dead = settings.model_copy(update={"celery_broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    migrated(settings.database_url)
    down, up = create_app(dead), create_app(settings)
    body, headers = sign(clerk_event("user.created", user_data(new_id("user"))))
    previous = celery_state.get_current_app()
    try:
        down.extensions["celery"].set_current()
        with down.app_context():
            response = down.test_client().post(URL, data=body, headers=headers)
            assert response.status_code == 503
            assert response.json is not None and response.json["error"] == "unavailable"
            assert stored_events() == 0
        up.extensions["celery"].set_current()
        with up.app_context():
            retry = up.test_client().post(URL, data=body, headers=headers)
            assert retry.json == {"ok": True, "duplicate": False, "ignored": False}
    finally:
        previous.set_current()
    assert queued(broker) == 1


def test_openapi_documents_the_webhook_and_the_jit_endpoint(api_app: Flask) -> None:
    spec = api_app.test_client().get("/api/v1/openapi.json").json
    assert spec is not None
    webhook = spec["paths"]["/api/v1/webhooks/clerk"]["post"]
    assert webhook["security"] == [{"svix": []}]
    assert {"202", "401", "503"} <= set(webhook["responses"])
    jit = spec["paths"]["/api/v1/internal/clerk/jit"]["post"]
    assert jit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ClerkJitRequest"
    )
