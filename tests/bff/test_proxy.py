"""The `/api/v1/*` proxy: public routes pass through; everything else needs a session."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from flask import Request

from envcat.bff.views.proxy import is_public_call
from envcat.core import signing
from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.bff import (
    PASSWORD,
    Browser,
    assert_security_headers,
    new_user,
    unique_email,
)
from tests.support.stack import LiveStack, runtime_of

pytestmark = pytest.mark.slow


def create_request(stack: LiveStack, workspace: str, **body: object) -> dict[str, str]:
    payload = {
        "client_pubkey": encode_public_key(generate_keypair()),
        "workspace": workspace,
        **body,
    }
    reply = httpx.post(f"{stack.bff_url}/api/v1/requests", json=payload)
    assert reply.status_code == 201, reply.text
    data: dict[str, str] = reply.json()
    return data


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/bundles"),
        ("POST", "/api/v1/bundles"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/audit"),
        ("DELETE", "/api/v1/keys/00000000-0000-0000-0000-000000000000"),
        ("POST", "/api/v1/requests/abcdefghijklmnop/deny"),
    ],
)
def test_authenticated_routes_need_a_session(stack: LiveStack, method: str, path: str) -> None:
    reply = httpx.request(method, f"{stack.bff_url}{path}", json={"name": "x"})
    assert reply.status_code == 401
    assert reply.json()["error"] == "unauthorized"
    assert_security_headers(reply)


def test_a_validly_signed_call_from_outside_is_not_forwarded(stack: LiveStack) -> None:
    owner = stack.sign_up(unique_email("ada"), PASSWORD)
    headers = signing.sign_headers(
        stack.secret,
        owner["user"]["id"],
        owner["tenant"]["id"],
        "GET",
        "/api/v1/bundles",
        "",
        b"",
    )
    reply = httpx.get(f"{stack.bff_url}/api/v1/bundles", headers=headers)
    assert reply.status_code == 401  # the bff neither trusts nor forwards signature headers


def test_forged_identity_headers_of_a_signed_in_user_are_ignored(
    stack: LiveStack, ada: Browser
) -> None:
    bob = new_user(stack, "bob")
    with stack.signed(bob.user_id, bob.tenant_id) as api:
        assert api.post("/api/v1/bundles", json={"name": "bob/secret"}).status_code == 201
    forged = {
        "X-User-Id": bob.user_id,
        "X-Tenant-Id": bob.tenant_id,
        "X-Timestamp": str(int(time.time())),
        "X-Nonce": "n" * 24,
        "X-Signature": "0" * 64,
    }
    reply = ada.get("/api/v1/bundles", headers=forged)
    assert reply.status_code == 200
    assert reply.json()["bundles"] == []
    me = ada.get("/api/v1/me", headers=forged).json()
    assert (me["user"]["id"], me["tenant"]["id"]) == (ada.user_id, ada.tenant_id)


def test_unsafe_calls_need_the_csrf_header(ada: Browser) -> None:
    missing = ada.client.post("/api/v1/bundles", json={"name": "a/b"})
    wrong = ada.client.post("/api/v1/bundles", json={"name": "a/b"}, headers={"X-CSRF-Token": "x"})
    for reply in (missing, wrong):
        assert reply.status_code == 403
        assert reply.json()["error"] == "csrf_failed"
    assert ada.get("/api/v1/bundles").json()["bundles"] == []
    good = ada.client.post(
        "/api/v1/bundles", json={"name": "a/b"}, headers={"X-CSRF-Token": ada.csrf}
    )
    assert good.status_code == 201
    assert good.headers["Content-Type"] == "application/json"
    assert_security_headers(good)


def _raw_status(base_url: str, method: str, path: str) -> int:
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, path, body=b"{}", headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/internal/local-auth/sign-in",
        "/api/v1/internal/clerk/jit",
        "/api/v1/bundles/../internal/local-auth/sign-in",
        "/api/v1/bundles/%2e%2e/internal/local-auth/sign-up",
        "/api/v1/./internal/local-auth/sign-up",
        "/api/v1/requests/a%00b/context",
    ],
)
def test_internal_endpoints_are_unreachable_from_outside(
    stack: LiveStack, ada: Browser, path: str
) -> None:
    assert _raw_status(stack.bff_url, "POST", path) == 404
    # not even with a session
    reply = ada.client.post(path, json={}, headers={"X-CSRF-Token": ada.csrf})
    assert reply.status_code == 404


def test_public_request_endpoints_pass_through(stack: LiveStack, ada: Browser) -> None:
    created = create_request(stack, ada.workspace, bundle="production/api", template_keys=["A"])
    assert created["verification_uri_complete"] == (f"{stack.bff_url}/approve/{created['id']}")
    base = f"{stack.bff_url}/api/v1/requests/{created['id']}"
    context = httpx.get(f"{base}/context")
    assert context.status_code == 200
    assert context.json()["user_code"] == created["user_code"]
    assert context.json()["bundle"] == "production/api"
    token = {"X-Poll-Token": created["poll_token"]}
    pending = httpx.get(f"{base}/wait", params={"timeout": 0}, headers=token)
    assert (pending.status_code, pending.json()) == (200, {"status": "pending"})
    no_token = httpx.get(f"{base}/wait", params={"timeout": 0})
    assert no_token.status_code == 401
    assert no_token.json()["error"] == "invalid_poll_token"
    assert httpx.delete(base).status_code == 401
    assert httpx.delete(base, headers=token).status_code == 204
    assert httpx.get(f"{base}/context").status_code == 404


def test_long_poll_wakes_on_approval_without_blocking_others(
    stack: LiveStack, ada: Browser
) -> None:
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        bundle = api.post("/api/v1/bundles", json={"name": "prod/api"}).json()
        api.post(f"/api/v1/bundles/{bundle['id']}/keys", json={"name": "A", "value": "1"})
    created = create_request(stack, ada.workspace)
    outcome: dict[str, object] = {}

    def wait() -> None:
        started = time.monotonic()
        reply = httpx.get(
            f"{stack.bff_url}/api/v1/requests/{created['id']}/wait",
            params={"timeout": 20},
            headers={"X-Poll-Token": created["poll_token"]},
            timeout=40,
        )
        outcome.update(reply=reply, seconds=time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert httpx.get(f"{stack.bff_url}/healthz").status_code == 200
    assert time.monotonic() - started < 1.0  # the waiting CLI holds no one else up
    approved = ada.client.post(
        f"/api/v1/requests/{created['id']}/encrypt-from-bundle",
        json={"bundle_id": bundle["id"], "include_keys": ["A"]},
        headers={"X-CSRF-Token": ada.csrf},
    )
    assert approved.status_code == 202, approved.text
    waiter.join(timeout=30)
    reply = outcome["reply"]
    assert isinstance(reply, httpx.Response)
    assert reply.json()["status"] == "ready"
    assert float(outcome["seconds"]) < 10  # type: ignore[arg-type]  # set by the waiter thread


def test_public_relay_routes_neither_read_nor_write_the_session(
    stack: LiveStack, ada: Browser
) -> None:
    """Issue #14: the CLI's public routes cost no session; pages still keep theirs."""
    created = ada.client.post(
        "/api/v1/requests",
        json={"client_pubkey": encode_public_key(generate_keypair()), "workspace": ada.workspace},
    )
    assert created.status_code == 201, created.text
    assert "set-cookie" not in created.headers  # a signed-in browser's cookie is left alone
    context = ada.get(f"/api/v1/requests/{created.json()['id']}/context")
    assert context.status_code == 200
    assert "set-cookie" not in context.headers
    assert context.headers["Cache-Control"] == "no-store"
    # A cookie that is no session at all is not even read there (no 400, no cookie back).
    garbage = httpx.get(
        f"{stack.bff_url}/api/v1/requests/{created.json()['id']}/context",
        headers={"Cookie": "envcat_session=not.a.signed.cookie"},
    )
    assert garbage.status_code == 200
    assert "set-cookie" not in garbage.headers
    # The same browser's session still signs it in on the other proxy routes and pages.
    assert ada.get("/api/v1/me").status_code == 200
    with stack.browser() as fresh:
        page = fresh.get("/sign-in")
    assert page.status_code == 200
    assert "envcat_session=" in page.headers["set-cookie"]  # the form's CSRF token


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [
        ("POST", "/api/v1/requests", True),
        ("GET", "/api/v1/requests/abcdefghijklmnop/wait", True),
        ("GET", "/api/v1/requests/abcdefghijklmnop/context", True),
        ("DELETE", "/api/v1/requests/abcdefghijklmnop", True),
        ("GET", "/api/v1/requests", False),
        ("POST", "/api/v1/requests/abcdefghijklmnop/deny", False),
        ("GET", "/api/v1/me", False),
        ("GET", "/sign-in", False),
        ("POST", "/api/v1requests", False),
    ],
)
def test_only_public_routes_go_without_a_session(method: str, path: str, public: bool) -> None:
    assert is_public_call(Request.from_values(path=path, method=method)) is public


def test_a_public_reply_is_relayed_byte_for_byte(stack: LiveStack) -> None:
    """The proxy passes the api's body on as it came, never parsed and written again."""
    direct = httpx.get(f"{stack.api_url}/api/v1/openapi.json")
    relayed = httpx.get(f"{stack.bff_url}/api/v1/openapi.json")
    assert relayed.status_code == direct.status_code == 200
    assert relayed.content == direct.content
    assert relayed.headers["Content-Type"] == direct.headers["Content-Type"]


def test_request_id_is_kept_end_to_end(stack: LiveStack, ada: Browser) -> None:
    created = create_request(stack, ada.workspace)
    reply = httpx.get(
        f"{stack.bff_url}/api/v1/requests/{created['id']}/context",
        headers={"X-Request-Id": "trace-0123456789"},
    )
    assert reply.headers["X-Request-Id"] == "trace-0123456789"


def test_unreachable_api_gives_a_json_503(tmp_path: Path, redis_url: str, broker_url: str) -> None:
    from envcat.bff import create_app
    from tests.support import free_port
    from tests.support.settings import make_settings

    settings = make_settings(
        f"sqlite:///{tmp_path / 'unused.db'}",
        redis_url,
        broker_url,
        api_base_url=f"http://127.0.0.1:{free_port()}",
    )
    app = create_app(settings)
    client = app.test_client()
    reply = client.post("/api/v1/requests", json={"client_pubkey": "x"})
    assert reply.status_code == 503
    assert reply.get_json()["error"] == "unavailable"
    assert reply.headers["X-Frame-Options"] == "DENY"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert json.loads(ready.data)["checks"] == {"api": False, "redis": True}
    runtime_of(app).close()
