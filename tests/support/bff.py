"""Helpers for bff tests: a cookie-keeping httpx "browser" signed in through the pages,
and one live stack per test module."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from tests.support.stack import LiveStack, live_stack

PASSWORD = "correct horse battery staple"
METRICS_TOKEN = "bff-test-metrics-token"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_in(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(html)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


def assert_security_headers(response: httpx.Response) -> None:
    """The headers of DESIGN §9, on any response."""
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.request.url)
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


@dataclass
class Browser:
    """An httpx client holding a bff session cookie, posting forms with the CSRF token."""

    client: httpx.Client
    csrf: str
    account: dict[str, Any]

    @property
    def user_id(self) -> str:
        return str(self.account["user"]["id"])

    @property
    def tenant_id(self) -> str:
        return str(self.account["tenant"]["id"])

    @property
    def workspace(self) -> str:
        """The slug a CLI names this person's workspace by (`envcat get -w …`)."""
        return str(self.account["tenant"]["slug"])

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, data={**(data or {}), "csrf_token": self.csrf}, **kwargs)


def sign_in(stack: LiveStack, email: str, account: dict[str, Any]) -> Browser:
    """Sign in through the sign-in form, as a browser without JavaScript would."""
    client = stack.browser()
    token = csrf_in(client.get("/sign-in").text)
    reply = client.post(
        "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token}
    )
    assert reply.status_code == 302, reply.text
    return Browser(client, csrf_in(client.get("/bundles").text), account)


def unique_email(name: str) -> str:
    """An address no other test of a shared stack uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}@example.test"


def new_user(stack: LiveStack, name: str) -> Browser:
    """A fresh local account (owner of its personal tenant), signed in."""
    email = unique_email(name)
    return sign_in(stack, email, stack.sign_up(email, PASSWORD))


@contextlib.contextmanager
def module_stack(
    redis_base_url: str,
    redis_dbs: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
    **overrides: Any,
) -> Iterator[LiveStack]:
    """One live stack for a whole test module (each stack costs ~2 s to start and stop).

    It keeps its app data in a Redis database of its own, so the per-test flush
    of the `redis_url` fixture cannot pull state from under it.
    """
    # The test stack stands behind one TLS proxy: tests play it with X-Forwarded-*.
    overrides = {"trusted_proxies": 1, "metrics_token": METRICS_TOKEN, **overrides}
    data_db = next(n for n in range(2, 16) if n not in redis_dbs)
    data_url = f"{redis_base_url}/{data_db}"
    with redis.Redis.from_url(data_url) as client:
        client.flushdb()
    database = tmp_path_factory.mktemp("bff-stack") / "envcat.db"
    with contextlib.ExitStack() as exits:
        with pytest.MonkeyPatch.context() as env:
            # Module fixtures run before the autouse environment cleaner: clean here too.
            for name in Settings.model_fields:
                env.delenv(name.upper(), raising=False)
            shared = exits.enter_context(
                live_stack(
                    f"sqlite:///{database}",
                    data_url,
                    f"{redis_base_url}/{redis_dbs[1]}",
                    **overrides,
                )
            )
        yield shared


_BUNDLE_URL = re.compile(r"^/bundles/([0-9a-f-]{36})$")


def create_bundle(browser: Browser, name: str) -> str:
    reply = browser.post("/bundles", {"name": name, "description": "d", "tags": "prod, api"})
    assert reply.status_code == 302, reply.text
    match = _BUNDLE_URL.match(reply.headers["Location"])
    assert match is not None, reply.headers["Location"]
    return match.group(1)


def add_key(browser: Browser, bundle_id: str, name: str, value: str = "v", **flags: str) -> None:
    reply = browser.post(f"/bundles/{bundle_id}/keys", {"name": name, "value": value, **flags})
    assert reply.status_code == 302
    assert f"Added {name}." in browser.get(reply.headers["Location"]).text


def bundle_json(browser: Browser, bundle_id: str) -> dict[str, Any]:
    data: dict[str, Any] = browser.get(f"/api/v1/bundles/{bundle_id}").json()
    return data


def open_request(stack: LiveStack, workspace: str, **hints: Any) -> dict[str, str]:
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": workspace, **hints}
    reply = httpx.post(f"{stack.bff_url}/api/v1/requests", json=body)
    assert reply.status_code == 201
    data: dict[str, str] = reply.json()
    return data
