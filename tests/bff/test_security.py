"""Headers, cookies, CSRF, redirects and sign-in throttling of the bff, on the live stack."""

from __future__ import annotations

import httpx
import pytest
import redis

from envcat.bff.security import content_security_policy, safe_redirect_target, session_secret
from envcat.core.settings import Settings
from tests.support.bff import (
    METRICS_TOKEN,
    PASSWORD,
    Browser,
    assert_security_headers,
    csrf_in,
    unique_email,
)
from tests.support.settings import make_settings
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

BAD_TARGETS = [
    "//evil.example",
    "///evil.example",
    "https://evil.example/approve/x",
    "http:/evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    " /approve/x",
    "/%0d%0aSet-Cookie:x=1\r\n",
    "javascript:alert(1)",
    "evil.example",
    "/approve/\u2215\u2215evil",
    "",
]


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_unsafe_redirect_targets_fall_back_home(target: str) -> None:
    assert safe_redirect_target(target) == "/"


@pytest.mark.parametrize("target", ["/approve/abc_DEF-123", "/keys?q=API", "/bundles/x#top"])
def test_same_site_paths_are_kept(target: str) -> None:
    assert safe_redirect_target(target) == target


def test_session_key_is_derived_not_the_shared_secret(settings: Settings) -> None:
    derived = session_secret(settings)
    shared = settings.bff_shared_secret.get_secret_value()
    assert derived != shared and shared not in derived
    assert derived == session_secret(settings)  # every bff process agrees
    own = make_settings(
        settings.database_url,
        settings.redis_url,
        settings.broker_url,
        session_secret="s" * 40,
    )
    assert session_secret(own) == "s" * 40


def test_local_csp_allows_no_outside_origin(settings: Settings) -> None:
    policy = content_security_policy(settings)
    assert "https:" not in policy and "unsafe-inline" not in policy
    assert "script-src 'self';" in policy


def test_every_kind_of_response_carries_the_security_headers(
    stack: LiveStack, ada: Browser
) -> None:
    anonymous = stack.browser()
    replies = [
        anonymous.get("/"),
        anonymous.get("/sign-in"),
        anonymous.get("/static/app.css"),
        anonymous.get("/static/app.js"),
        anonymous.get("/no-such-page"),
        anonymous.get("/bundles"),  # redirect
        anonymous.get("/api/v1/bundles"),  # 401 JSON
        anonymous.get("/sign-out"),  # 405
        anonymous.get("/healthz"),
        ada.get("/bundles"),
        ada.get("/api/v1/me"),  # proxied JSON
    ]
    statuses = [reply.status_code for reply in replies]
    assert statuses == [200, 200, 200, 200, 404, 302, 401, 405, 200, 200, 200]
    for reply in replies:
        assert_security_headers(reply)
    assert replies[4].headers["Content-Type"].startswith("text/html")  # a page, not a trace
    assert "Traceback" not in replies[4].text
    assert replies[9].headers["Cache-Control"] == "no-store"


def _session_cookie(reply: httpx.Response) -> str:
    cookie = str(reply.headers.get("Set-Cookie", ""))
    assert cookie.startswith("envcat_session="), cookie
    return cookie


def test_session_cookie_flags(stack: LiveStack) -> None:
    plain = _session_cookie(httpx.get(f"{stack.bff_url}/sign-in"))
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    behind_tls = httpx.get(f"{stack.bff_url}/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in _session_cookie(behind_tls)
    assert "max-age" in behind_tls.headers["Strict-Transport-Security"]


@pytest.mark.parametrize("path", ["/bundles", "/keys?q=A", "/audit", "/approve/abcdefghij12"])
def test_pages_send_anonymous_visitors_to_sign_in(stack: LiveStack, path: str) -> None:
    reply = httpx.get(f"{stack.bff_url}{path}")
    assert reply.status_code == 302
    assert httpx.URL(reply.headers["Location"]).params["redirect_url"] == path


def _sign_in_to(stack: LiveStack, email: str, target: str) -> httpx.Response:
    with stack.browser() as client:
        token = csrf_in(client.get("/sign-in", params={"redirect_url": target}).text)
        return client.post(
            "/sign-in",
            data={
                "email": email,
                "password": PASSWORD,
                "csrf_token": token,
                "redirect_url": target,
            },
        )


def test_sign_in_refuses_open_redirects(stack: LiveStack) -> None:
    email = unique_email("eve")
    stack.sign_up(email, PASSWORD)
    for target in ("//evil.example", "https://evil.example", "/\\evil.example"):
        reply = _sign_in_to(stack, email, target)
        assert (reply.status_code, reply.headers["Location"]) == (302, "/bundles"), target
    assert _sign_in_to(stack, email, "/keys?q=A").headers["Location"] == "/keys?q=A"


def test_posts_without_the_csrf_token_are_refused(stack: LiveStack, ada: Browser) -> None:
    for path, data in (
        ("/bundles", {"name": "no/csrf"}),
        ("/keys", {"name": "NO_CSRF", "value": "x"}),
        ("/sign-out", {}),
    ):
        reply = ada.client.post(path, data=data)
        assert reply.status_code == 403, path
        assert "expired" in reply.text
        assert_security_headers(reply)
    forged = ada.client.post("/bundles", data={"name": "no/csrf", "csrf_token": "guess"})
    assert forged.status_code == 403
    assert ada.get("/api/v1/bundles").json()["bundles"] == []
    assert ada.get("/bundles").status_code == 200  # still signed in
    anonymous = stack.browser().post("/sign-in", data={"email": "a@b.c", "password": "x" * 12})
    assert anonymous.status_code == 403


def test_sign_out_ends_the_session(ada: Browser) -> None:
    reply = ada.post("/sign-out")
    assert (reply.status_code, reply.headers["Location"]) == (302, "/sign-in?signed_out=1")
    assert ada.get("/bundles").status_code == 302
    assert ada.get("/api/v1/me").status_code == 401


def test_failed_sign_ins_are_throttled_per_ip_and_email(
    stack: LiveStack, caplog: pytest.LogCaptureFixture
) -> None:
    email = unique_email("mallory")
    stack.sign_up(email, PASSWORD)
    wrong = "wrong-password-canary-81f2"
    client = stack.browser()
    token = csrf_in(client.get("/sign-in").text)
    statuses = []
    for _ in range(12):
        reply = client.post(
            "/sign-in", data={"email": email, "password": wrong, "csrf_token": token}
        )
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            break
        assert "Wrong email or password" in reply.text
    # 5 free failures, then this address waits out the email's growing delay (throttle.py).
    assert statuses[:6] == [401] * 6 and statuses[-1] == 429
    blocked = client.post(
        "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token}
    )
    assert blocked.status_code == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= 15 * 60
    other_ip = client.post(
        "/sign-in",
        data={"email": email, "password": PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-For": "198.51.100.7"},
    )
    assert other_ip.status_code == 302
    with redis.Redis.from_url(stack.settings.redis_url) as r:
        for key in r.scan_iter("bff:*"):
            assert email.encode() not in key  # counters are keyed by hashes
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert wrong not in logged and PASSWORD not in logged


def test_bad_sign_up_input_is_explained(stack: LiveStack) -> None:
    client = stack.browser()
    token = csrf_in(client.get("/sign-up").text)
    short = client.post(
        "/sign-up", data={"email": unique_email("x"), "password": "short", "csrf_token": token}
    )
    assert short.status_code == 400
    taken_email = unique_email("taken")
    stack.sign_up(taken_email, PASSWORD)
    taken = client.post(
        "/sign-up", data={"email": taken_email, "password": PASSWORD, "csrf_token": token}
    )
    assert taken.status_code == 302  # the same answer as a new account (test_sessions.py)
    assert "already exists" not in client.get(taken.headers["Location"]).text
    empty = client.post("/sign-up", data={"email": "", "password": "", "csrf_token": token})
    assert empty.status_code == 400


def test_health_readiness_and_metrics(stack: LiveStack, ada: Browser) -> None:
    assert httpx.get(f"{stack.bff_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.bff_url}/readyz")
    assert (ready.status_code, ready.json()["checks"]) == (200, {"api": True, "redis": True})
    assert httpx.get(f"{stack.bff_url}/metrics").status_code == 401
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    metrics = httpx.get(f"{stack.bff_url}/metrics", headers=scraper).text
    assert "envcat_bff_http_requests_total" in metrics
    assert 'envcat_bff_sign_ins_total{outcome="success"}' in metrics
    assert "envcat_bff_api_call_seconds_bucket" in metrics
