"""The CLI's public request endpoints against a real Redis and database (no worker)."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.core.usercode import user_code
from envcat.models import AuditEvent, db
from envcat.services.access_requests import lifecycle, store
from tests.support.api import REQUESTS, WORKSPACE, Cli, ensure_workspace
from tests.support.databases import migrated
from tests.support.requests import expire_now, stored_request
from tests.support.settings import make_settings


def _pub() -> str:
    return encode_public_key(generate_keypair())


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_create_returns_the_device_flow_fields(api_client: FlaskClient, settings: Settings) -> None:
    before = _metric("envcat_requests_created_total")
    pub = _pub()
    ensure_workspace(WORKSPACE)
    response = api_client.post(
        REQUESTS,
        json={
            "client_pubkey": pub,
            "workspace": WORKSPACE,
            "bundle": "production/api",
            "template_keys": ["DATABASE_URL", "API_KEY"],
            "context": {
                "hostname": "box",
                "cwd": "/src",
                "command": "envcat get",
                "client": "envcat/1",
            },
        },
    )
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {
        "id",
        "poll_token",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "interval",
        "expires_in",
    }
    assert len(base64.urlsafe_b64decode(body["id"] + "==")) * 8 >= 128
    assert len(base64.urlsafe_b64decode(body["poll_token"] + "==")) * 8 >= 128
    assert body["user_code"] == user_code(body["id"], pub)
    assert body["verification_uri"] == "http://envcat.test/approve"
    assert body["verification_uri_complete"] == f"http://envcat.test/approve/{body['id']}"
    assert (body["interval"], body["expires_in"]) == (5, settings.request_ttl)
    assert response.headers["Cache-Control"] == "no-store"
    assert _metric("envcat_requests_created_total") == before + 1


def test_create_stores_no_tenant_data_and_no_token(
    api_client: FlaskClient, redis_client: redis.Redis
) -> None:
    cli = Cli.start(api_client, bundle="production/api")
    stored = redis_client.hgetall(store.request_key(cli.id))
    assert cli.poll_token not in str(stored)
    assert stored["s"] == "pending"


BAD_PUBKEYS = [
    ("missing", None),
    ("not base64", "not base64 at all!"),
    ("urlsafe alphabet", base64.urlsafe_b64encode(b"\xfb" * 32).decode()),
    ("no padding", base64.b64encode(b"k" * 32).decode().rstrip("=")),
    ("31 bytes", base64.b64encode(b"k" * 31).decode()),
    ("33 bytes", base64.b64encode(b"k" * 33).decode()),
    ("non-canonical", base64.b64encode(b"k" * 32).decode()[:-2] + "l="),
    ("a number", 12345),
]


def test_create_refuses_a_bad_public_key(api_client: FlaskClient) -> None:
    for case, pubkey in BAD_PUBKEYS:
        body = {} if pubkey is None else {"client_pubkey": pubkey}
        response = api_client.post(REQUESTS, json=body)
        assert response.status_code == 400, case
        error = response.get_json()
        assert error["error"] == "validation_error", case
        assert error["details"][0]["loc"] == ["client_pubkey"], case
        assert "input" not in error["details"][0]


BAD_HINTS = [
    ("bundle", "no spaces allowed"),
    ("bundle", "x" * 201),
    ("bundle", 7),
    ("bundle_id", ""),
    ("bundle_id", "x" * 65),
    ("template_keys", ["1BAD"]),
    ("template_keys", "API_KEY"),
    ("template_keys", ["OK"] * 51),
    ("template_keys", ["K" * 129]),
    ("context", "box"),
    ("context", {"hostname": "h" * 1025}),
    ("template_keys", [f"K{i:02d}" + "X" * 40 for i in range(40)]),  # over 1,500 characters
    ("context", {"cwd": 3}),
    ("context", {"client": "c" * 101}),
]


def test_create_refuses_bad_hints(api_client: FlaskClient) -> None:
    for field, value in BAD_HINTS:
        body = {"client_pubkey": _pub(), "workspace": WORKSPACE, field: value}
        response = api_client.post(REQUESTS, json=body)
        assert response.status_code == 400, (field, value)
        assert response.get_json()["details"][0]["loc"][0] == field


def test_create_needs_a_workspace_that_exists(api_client: FlaskClient) -> None:
    """Issue #11: every request names the workspace whose members alone can decide it."""
    ensure_workspace(WORKSPACE)
    for body, status, code in [
        ({"client_pubkey": _pub()}, 400, "validation_error"),
        ({"client_pubkey": _pub(), "workspace": "Not A Slug"}, 400, "validation_error"),
        ({"client_pubkey": _pub(), "workspace": "x" * 65}, 400, "validation_error"),
        ({"client_pubkey": _pub(), "workspace": "nobody-here"}, 404, "unknown_workspace"),
    ]:
        response = api_client.post(REQUESTS, json=body)
        assert (response.status_code, response.get_json()["error"]) == (status, code), body
    response = api_client.post(REQUESTS, json={"client_pubkey": _pub(), "workspace": WORKSPACE})
    assert response.status_code == 201
    context = api_client.get(f"{REQUESTS}/{response.get_json()['id']}/context").get_json()
    assert context["workspace"] == WORKSPACE


def _api_with(
    sqlite_url: str, redis_url: str, broker_url: str, **overrides: object
) -> tuple[FlaskClient, Callable[[str], Any]]:
    """An api with these settings, and `post(ip)` creating a request from that address."""
    from envcat.api import create_app

    settings = make_settings(sqlite_url, redis_url, broker_url, **overrides)
    migrated(settings.database_url)
    app = create_app(settings)
    client = app.test_client()
    with app.app_context():
        ensure_workspace(WORKSPACE)

    def post(ip: str) -> Any:
        # The socket's address (X-Forwarded-For is not trusted: TRUSTED_PROXIES=0).
        body = {"client_pubkey": _pub(), "workspace": WORKSPACE}
        return client.post(REQUESTS, json=body, environ_base={"REMOTE_ADDR": ip})

    return client, post


def test_one_address_holds_at_most_max_pending_requests(
    sqlite_url: str, redis_url: str, broker_url: str
) -> None:
    """Issue #12: undecided requests per client IP are capped; a cancelled one frees a place."""
    client, post = _api_with(sqlite_url, redis_url, broker_url, max_pending_per_ip=3)

    created = [post("192.0.2.10") for _ in range(3)]
    assert [r.status_code for r in created] == [201, 201, 201]
    refused = post("192.0.2.10")
    assert (refused.status_code, refused.get_json()["error"]) == (429, "rate_limited")
    assert int(refused.headers["Retry-After"]) > 0
    assert post("192.0.2.11").status_code == 201
    first = created[0].get_json()
    headers = {"X-Poll-Token": first["poll_token"]}
    assert client.delete(f"{REQUESTS}/{first['id']}", headers=headers).status_code == 204
    assert post("192.0.2.10").status_code == 201


def test_create_refuses_a_body_that_is_not_an_object(api_client: FlaskClient) -> None:
    for data in (b"[]", b"not json", b""):
        response = api_client.post(REQUESTS, data=data, content_type="application/json")
        assert response.status_code == 400
        assert response.get_json()["error"] == "validation_error"


def test_create_ignores_unknown_fields_for_newer_clients(api_client: FlaskClient) -> None:
    cli = Cli.start(api_client, context={"hostname": "box", "os_user": "ann"}, future=1)
    context = api_client.get(f"{REQUESTS}/{cli.id}/context").get_json()["context"]
    assert context["hostname"] == "box"
    assert "os_user" not in context


def test_create_is_rate_limited_per_client_ip(
    sqlite_url: str, redis_url: str, broker_url: str
) -> None:
    client, post = _api_with(sqlite_url, redis_url, broker_url, request_rate_limit="2/minute")

    assert [post("192.0.2.1").status_code for _ in range(2)] == [201, 201]
    limited = post("192.0.2.1")
    assert limited.status_code == 429
    assert limited.get_json()["error"] == "rate_limited"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert post("192.0.2.2").status_code == 201  # another client is not affected
    # malformed bodies count too: the limit is checked before the body is parsed
    bad = client.post(REQUESTS, json={}, environ_base={"REMOTE_ADDR": "192.0.2.3"})
    assert bad.status_code == 400
    assert post("192.0.2.3").status_code == 201
    assert post("192.0.2.3").status_code == 429


def test_context_shows_the_request_to_its_approver(api_client: FlaskClient) -> None:
    cli = Cli.start(
        api_client,
        bundle="production/api",
        bundle_id="b-1",
        template_keys=["API_KEY"],
        context={"hostname": "box", "git_remote": None},
    )
    response = api_client.get(f"{REQUESTS}/{cli.id}/context")
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == cli.id
    assert body["status"] == "pending"
    assert body["user_code"] == cli.created["user_code"]  # type: ignore[index]  # the create reply, a JSON object
    assert (body["bundle"], body["bundle_id"]) == ("production/api", "b-1")
    assert body["template_keys"] == ["API_KEY"]
    assert body["context"]["hostname"] == "box"
    assert 0 < body["expires_at"] - body["created"] <= 300
    assert "poll_token" not in str(body)


def test_context_is_404_when_unknown_expired_or_delivered(
    api_client: FlaskClient, redis_client: redis.Redis
) -> None:
    assert api_client.get(f"{REQUESTS}/{'x' * 32}/context").status_code == 404
    assert api_client.get(f"{REQUESTS}/bad%20id/context").status_code == 404
    short, _ = stored_request(redis_client, ttl=1)
    cli = Cli.start(api_client)
    store.mark_denied(redis_client, cli.id, denied_by="u")
    assert cli.wait().get_json()["status"] == "denied"
    expire_now(redis_client, short.id)
    for request_id in (short.id, cli.id):
        response = api_client.get(f"{REQUESTS}/{request_id}/context")
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"


def test_wait_refuses_a_missing_or_wrong_poll_token(api_client: FlaskClient) -> None:
    cli = Cli.start(api_client)
    missing = api_client.get(f"{REQUESTS}/{cli.id}/wait")
    wrong = cli.wait(token="x" * 32)
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_poll_token"
        assert "status" not in response.get_json()
    assert cli.wait().get_json() == {"status": "pending"}


def test_wait_with_a_wrong_token_does_not_take_a_ready_payload(
    api_client: FlaskClient, redis_client: redis.Redis
) -> None:
    cli = Cli.start(api_client)
    approval = store.Approval(WORKSPACE, "u", "b", ("A",), time.time())
    store.mark_ready(redis_client, cli.id, ciphertext_b64="c2VhbGVk", approval=approval)
    assert cli.wait(token="y" * 32).status_code == 401
    assert cli.wait().get_json() == {"status": "ready", "ciphertext_base64": "c2VhbGVk"}


def test_wait_refuses_a_bad_timeout(api_client: FlaskClient) -> None:
    cli = Cli.start(api_client)
    for timeout in ("-1", "31", "abc", "5.0", "", "1e1"):
        response = api_client.get(
            f"{REQUESTS}/{cli.id}/wait?timeout={timeout}",
            headers={"X-Poll-Token": cli.poll_token},
        )
        assert response.status_code == 400, timeout
        assert response.get_json()["error"] == "validation_error"


def test_short_polls_faster_than_the_interval_get_slow_down(api_client: FlaskClient) -> None:
    cli = Cli.start(api_client)
    assert cli.wait().get_json() == {"status": "pending"}
    too_fast = cli.wait()
    assert too_fast.status_code == 400
    assert too_fast.get_json()["error"] == "slow_down"
    # a long poll is never "too fast": it waits on the server
    assert cli.wait(timeout=1).get_json() == {"status": "pending"}


def test_long_poll_holds_until_its_timeout(api_client: FlaskClient) -> None:
    cli = Cli.start(api_client)
    started = time.monotonic()
    assert cli.wait(timeout=1).get_json() == {"status": "pending"}
    assert 0.9 <= time.monotonic() - started < 3  # at most a tenth early


def test_pending_long_polls_answer_spread_a_little_before_their_timeout(
    api_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls that began together fall due over a few seconds, not in one instant."""
    spreads: list[tuple[float, float]] = []

    def latest(low: float, high: float) -> float:
        spreads.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", latest)  # the draw lifecycle makes
    assert [lifecycle.answer_early(t) for t in (1, 10, 20, 60)] == [0.1, 1.0, 2.0, 2.0]
    assert spreads == [(0.0, 0.1), (0.0, 1.0), (0.0, 2.0), (0.0, 2.0)]
    cli = Cli.start(api_client)
    started = time.monotonic()
    assert cli.wait(timeout=4).get_json() == {"status": "pending"}
    assert 3.5 <= time.monotonic() - started < 3.95  # 0.4 s early, as drawn


def test_long_poll_returns_within_milliseconds_of_a_decision(
    api_client: FlaskClient, redis_client: redis.Redis
) -> None:
    cli = Cli.start(api_client)
    replies: list[tuple[float, Any]] = []

    def poll() -> None:
        replies.append((time.monotonic(), cli.wait(timeout=20).get_json()))

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    decided = time.monotonic()
    store.mark_denied(redis_client, cli.id, denied_by="u")
    thread.join(timeout=10)
    ((answered, body),) = replies
    assert body == {"status": "denied"}
    assert answered - decided < 0.5


def test_wait_is_410_when_expired_delivered_or_unknown(
    api_client: FlaskClient, redis_client: redis.Redis
) -> None:
    expired, token = stored_request(redis_client, ttl=1)
    expire_now(redis_client, expired.id)
    gone = api_client.get(f"{REQUESTS}/{expired.id}/wait", headers={"X-Poll-Token": token})
    unknown = api_client.get(f"{REQUESTS}/{'z' * 32}/wait", headers={"X-Poll-Token": token})
    cli = Cli.start(api_client)
    store.mark_failed(redis_client, cli.id, message="the bundle was deleted after the approval")
    assert cli.wait().get_json() == {
        "status": "failed",
        "message": "the bundle was deleted after the approval",
    }
    for response in (gone, unknown, cli.wait()):
        assert response.status_code == 410
        assert response.get_json()["error"] == "expired_token"


def test_cancel_needs_the_poll_token(api_client: FlaskClient) -> None:
    cli = Cli.start(api_client)
    before = _metric("envcat_requests_cancelled_total")
    assert api_client.delete(f"{REQUESTS}/{cli.id}").status_code == 401
    assert cli.cancel(token="w" * 32).status_code == 401
    assert api_client.get(f"{REQUESTS}/{cli.id}/context").status_code == 200
    response = cli.cancel()
    assert response.status_code == 204
    assert response.data == b""
    assert api_client.get(f"{REQUESTS}/{cli.id}/context").status_code == 404
    assert cli.wait().status_code == 410
    assert cli.cancel().status_code == 410
    assert _metric("envcat_requests_cancelled_total") == before + 1


def test_cancel_wakes_a_long_poll(api_client: FlaskClient, api_app: Flask) -> None:
    cli = Cli.start(api_client)
    replies: list[int] = []
    thread = threading.Thread(target=lambda: replies.append(cli.wait(timeout=20).status_code))
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert cli.cancel().status_code == 204
    thread.join(timeout=10)
    assert replies == [410]
    assert time.monotonic() - started < 1


def test_cancel_of_a_pending_request_is_not_audited(api_client: FlaskClient) -> None:
    cli = Cli.start(api_client)
    assert cli.cancel().status_code == 204
    assert db.session.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == 0
