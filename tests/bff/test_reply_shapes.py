"""An api reply of the wrong shape is the api failing: the bff answers a clean 502.

The bff parses every api reply into the `core.schemas` model the api builds it from
(issue #13). A real HTTP server on a free loopback port stands in for an api that
answers with a field missing or of the wrong type; the bff must answer 502 (an error
page, or `{"error", "message"}` under /api/), never a 500 or a traceback, and never
repeat what the reply held.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from envcat.bff import create_app
from tests.support.api_stand_in import Answer, serving, stand_in
from tests.support.bff import csrf_in
from tests.support.settings import make_settings
from tests.support.stack import runtime_of

CANARY = "canary-reply-7f3a9c21"
USER = {"id": "usr_1", "email": "ada@example.test", "name": None}
TENANT = {"id": "ten_1", "name": "Ada", "kind": "personal", "slug": "ada"}
ACCOUNT = {"user": USER, "tenant": TENANT, "role": "owner"}

Replies = dict[str, object]  # path (no query) → the JSON body the api stand-in answers 200


def _answer(replies: Replies) -> Answer:
    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        found = replies.get(path.partition("?")[0])
        if found is None:
            return 404, json.dumps({"error": "not_found", "message": "Not found."}).encode()
        return 200, json.dumps(found).encode()

    return answer


@pytest.fixture
def replies() -> Replies:
    return {"/api/v1/internal/local-auth/sign-in": ACCOUNT}


@pytest.fixture
def bff(replies: Replies, tmp_path: Path, redis_url: str, broker_url: str) -> Iterator[FlaskClient]:
    with serving(stand_in(_answer(replies))) as url:
        settings = make_settings(
            f"sqlite:///{tmp_path / 'unused.db'}", redis_url, broker_url, api_base_url=url
        )
        app = create_app(settings)
        try:
            yield app.test_client()
        finally:
            runtime_of(app).close()


def _sign_in(client: FlaskClient) -> None:
    token = csrf_in(client.get("/sign-in").get_data(as_text=True))
    form = {"email": "ada@example.test", "password": "long enough password", "csrf_token": token}
    reply = client.post("/sign-in", data=form)
    assert reply.status_code == 302, reply.get_data(as_text=True)


def _assert_clean(body: str, caplog: pytest.LogCaptureFixture) -> None:
    assert "Traceback" not in body
    assert CANARY not in body
    assert CANARY not in caplog.text
    assert "unhandled error" not in caplog.text


def test_a_list_with_a_field_missing_is_a_502_page(
    bff: FlaskClient, replies: Replies, caplog: pytest.LogCaptureFixture
) -> None:
    _sign_in(bff)
    # No description, tags, key_count or times: not a BundleList.
    replies["/api/v1/bundles"] = {"bundles": [{"id": "bdl_1", "name": CANARY}]}
    with caplog.at_level(logging.INFO):
        page = bff.get("/bundles")
    assert page.status_code == 502
    assert page.mimetype == "text/html"
    body = page.get_data(as_text=True)
    assert "EnvCat is unavailable" in body
    assert "could not read" in body
    _assert_clean(body, caplog)
    assert "api reply of the wrong shape" in caplog.text


def test_a_field_of_the_wrong_type_is_a_502_page(
    bff: FlaskClient, replies: Replies, caplog: pytest.LogCaptureFixture
) -> None:
    _sign_in(bff)
    replies["/api/v1/workspace/policy"] = {"require_passkey": CANARY}
    replies["/api/v1/passkeys"] = {"passkeys": []}
    replies["/api/v1/me/user-tokens"] = {"items": []}
    with caplog.at_level(logging.INFO):
        page = bff.get("/account")
    assert page.status_code == 502
    _assert_clean(page.get_data(as_text=True), caplog)


def test_a_sign_in_reply_without_a_role_starts_no_session(
    bff: FlaskClient, replies: Replies, caplog: pytest.LogCaptureFixture
) -> None:
    replies["/api/v1/internal/local-auth/sign-in"] = {
        "user": {**USER, "email": CANARY},
        "tenant": TENANT,
    }
    token = csrf_in(bff.get("/sign-in").get_data(as_text=True))
    form = {"email": "ada@example.test", "password": "long enough password", "csrf_token": token}
    with caplog.at_level(logging.INFO):
        reply = bff.post("/sign-in", data=form)
    assert reply.status_code == 502
    _assert_clean(reply.get_data(as_text=True), caplog)
    assert bff.get("/bundles").status_code == 302  # still signed out: back to the sign-in page


def test_a_terminal_whoami_of_the_wrong_shape_is_a_json_502(
    bff: FlaskClient, replies: Replies, caplog: pytest.LogCaptureFixture
) -> None:
    replies["/api/v1/logins/whoami"] = {"user_id": "usr_1", "email": CANARY}
    with caplog.at_level(logging.INFO):
        reply = bff.get("/api/v1/bundles", headers={"Authorization": "Bearer ecu_abc_def"})
    assert reply.status_code == 502
    assert reply.get_json() == {
        "error": "bad_gateway",
        "message": "The api sent a reply EnvCat could not read; retry in a moment.",
    }
    _assert_clean(reply.get_data(as_text=True), caplog)
