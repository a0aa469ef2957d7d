"""Server-side sessions, the uniform sign-up answer and the account page, on the live stack."""

from __future__ import annotations

import re

import httpx
import pytest
import redis

from envcat.bff.sessions import PREFIX, USER_PREFIX
from tests.support.bff import PASSWORD, Browser, csrf_in, sign_in, unique_email
from tests.support.stack import LiveStack

NEW_PASSWORD = "a brand new passphrase"


def _copy(stack: LiveStack, browser: Browser) -> httpx.Client:
    """Another client holding a copy of the browser's cookies (a stolen cookie)."""
    client = stack.browser()
    client.cookies.update(browser.client.cookies)
    return client


def _is_signed_out(client: httpx.Client) -> bool:
    page = client.get("/bundles")
    api = client.get("/api/v1/me")
    if page.status_code == 302 and api.status_code == 401:
        assert httpx.URL(page.headers["Location"]).path == "/sign-in"
        assert api.json()["error"] == "unauthorized"
        return True
    assert (page.status_code, api.status_code) == (200, 200)
    return False


def _second_session(stack: LiveStack, ada: Browser) -> Browser:
    return sign_in(stack, str(ada.account["user"]["email"]), ada.account)


def test_a_copied_cookie_is_refused_after_sign_out(stack: LiveStack, ada: Browser) -> None:
    stolen = _copy(stack, ada)
    assert not _is_signed_out(stolen)
    reply = ada.post("/sign-out")
    assert (reply.status_code, reply.headers["Location"]) == (302, "/sign-in?signed_out=1")
    assert _is_signed_out(stolen)
    assert _is_signed_out(ada.client)


def test_sessions_are_kept_in_redis_under_hashed_ids(stack: LiveStack, ada: Browser) -> None:
    with redis.Redis.from_url(stack.settings.redis_url, decode_responses=True) as r:
        members = r.smembers(USER_PREFIX + ada.user_id)
        assert len(members) == 1
        (key,) = members
        assert key.startswith(PREFIX) and r.hget(key, "user") == ada.user_id
        assert 0 < r.ttl(key) <= 12 * 3600
        cookie = str(ada.client.cookies.get("envcat_session"))
        for name in r.scan_iter(f"{PREFIX}*"):
            assert name.removeprefix(PREFIX) not in cookie
        ada.post("/sign-out")
        assert not r.exists(key) and not r.sismember(USER_PREFIX + ada.user_id, key)


def test_sign_out_everywhere_ends_every_session(stack: LiveStack, ada: Browser) -> None:
    other = _second_session(stack, ada)
    page = ada.get("/account")
    assert page.status_code == 200
    assert "signed in in 2 places" in page.text
    reply = ada.post("/account/sign-out-everywhere")
    assert (reply.status_code, reply.headers["Location"]) == (302, "/sign-in")
    assert _is_signed_out(ada.client)
    assert _is_signed_out(other.client)


def test_sign_out_other_sessions_keeps_this_one(stack: LiveStack, ada: Browser) -> None:
    others = [_second_session(stack, ada) for _ in range(2)]
    stolen = _copy(stack, ada)  # a copy of this very cookie
    reply = ada.post("/account/sign-out-others")
    assert (reply.status_code, reply.headers["Location"]) == (302, "/account")
    assert "2 other sessions were signed out" in ada.get("/account").text
    assert not _is_signed_out(ada.client)
    assert all(_is_signed_out(other.client) for other in others)
    assert _is_signed_out(stolen)


def test_password_change_needs_the_old_one_and_ends_other_sessions(
    stack: LiveStack, ada: Browser
) -> None:
    email = str(ada.account["user"]["email"])
    other = _second_session(stack, ada)
    change = {"new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD}
    wrong = ada.post("/account/password", {**change, "old_password": "not my password"})
    assert wrong.status_code == 401 and "current password is wrong" in wrong.text
    differ = ada.post(
        "/account/password",
        {**change, "old_password": PASSWORD, "new_password_confirm": "something else"},
    )
    assert differ.status_code == 400
    short = ada.post(
        "/account/password",
        {"old_password": PASSWORD, "new_password": "short", "new_password_confirm": "short"},
    )
    assert short.status_code == 400 and "at least 10 characters" in short.text
    huge = "y" * 1025  # never cut down to a shorter password than the one typed
    long = ada.post(
        "/account/password",
        {"old_password": PASSWORD, "new_password": huge, "new_password_confirm": huge},
    )
    assert long.status_code == 400 and "at most 1024 characters" in long.text
    assert not _is_signed_out(other.client)
    stolen = _copy(stack, ada)
    done = ada.post("/account/password", {**change, "old_password": PASSWORD})
    assert (done.status_code, done.headers["Location"]) == (302, "/account")
    assert "1 other session was signed out" in ada.get("/account").text
    assert not _is_signed_out(ada.client)
    assert _is_signed_out(other.client)
    assert _is_signed_out(stolen)  # this browser got a new session id
    with stack.browser() as client:
        token = csrf_in(client.get("/sign-in").text)
        old = client.post(
            "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token}
        )
        assert old.status_code == 401
        new = client.post(
            "/sign-in", data={"email": email, "password": NEW_PASSWORD, "csrf_token": token}
        )
        assert new.status_code == 302


def test_account_forms_need_the_csrf_token(ada: Browser) -> None:
    for path in ("/account/password", "/account/sign-out-everywhere", "/account/delete"):
        assert ada.client.post(path, data={"password": PASSWORD}).status_code == 403, path
    assert not _is_signed_out(ada.client)


def test_deleting_the_account_signs_out_everywhere(stack: LiveStack, ada: Browser) -> None:
    email = str(ada.account["user"]["email"])
    other = _second_session(stack, ada)
    unconfirmed = ada.post("/account/delete", {"password": PASSWORD})
    assert unconfirmed.status_code == 400
    wrong = ada.post("/account/delete", {"password": "not my password", "confirm": "yes"})
    assert wrong.status_code == 401 and "was not deleted" in wrong.text
    done = ada.post("/account/delete", {"password": PASSWORD, "confirm": "yes"})
    assert (done.status_code, done.headers["Location"]) == (302, "/sign-in")
    assert "Your account was deleted." in ada.get("/sign-in").text
    assert _is_signed_out(ada.client) and _is_signed_out(other.client)
    with stack.browser() as client:
        token = csrf_in(client.get("/sign-in").text)
        reply = client.post(
            "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token}
        )
        assert reply.status_code == 401


def test_the_last_owner_of_a_shared_workspace_is_told_why_not(
    stack: LiveStack, ada: Browser
) -> None:
    from envcat.models import db
    from tests.support.signed import add_member

    with stack.api_app.app_context():
        add_member(ada.user_id, "org_b1_shared", "owner", kind="org")
        add_member("usr_b1_bob", "org_b1_shared", "member", kind="org")
        db.session.commit()
    refused = ada.post("/account/delete", {"password": PASSWORD, "confirm": "yes"})
    assert refused.status_code == 409
    assert "only owner of org_b1_shared" in refused.text
    assert not _is_signed_out(ada.client)


def _sign_up(client: httpx.Client, email: str) -> httpx.Response:
    token = csrf_in(client.get("/sign-up").text)
    return client.post("/sign-up", data={"email": email, "password": PASSWORD, "csrf_token": token})


def _normalised(html: str) -> str:
    html = re.sub(r'name="csrf_token" value="[^"]+"', "", html)
    return re.sub(r'value="[^"]*@example\.test"', "", html)


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_sign_up_answers_the_same_for_new_and_taken_emails(stack: LiveStack, case: str) -> None:
    taken = unique_email("taken")
    stack.sign_up(taken, PASSWORD)
    answers = []
    for email in (unique_email("fresh"), taken.upper() if case == "upper" else taken):
        with stack.browser() as client:
            reply = _sign_up(client, email)
            follow = client.get(reply.headers["Location"])
            assert _is_signed_out(client)  # sign-up never signs in: that would differ
            answers.append((reply.status_code, reply.headers["Location"], _normalised(follow.text)))
    assert answers[0] == answers[1]
    assert answers[0][0] == 302 and "Your account is ready" in answers[0][2]


def test_a_new_account_signs_in_after_sign_up(stack: LiveStack) -> None:
    email = unique_email("newcomer")
    with stack.browser() as client:
        reply = _sign_up(client, email)
        page = client.get(reply.headers["Location"])
        assert f'value="{email}"' in page.text  # the form is filled in
        token = csrf_in(page.text)
        signed = client.post(
            "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token}
        )
        assert signed.status_code == 302
        assert client.get("/account").status_code == 200


def test_wrong_current_passwords_count_against_the_sign_in_throttle(
    stack: LiveStack, ada: Browser
) -> None:
    headers = {"X-Forwarded-For": "198.51.100.77"}
    change = {"new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD}
    statuses = []
    for n in range(12):
        reply = ada.post(
            "/account/password", {**change, "old_password": f"guess {n} wrong"}, headers=headers
        )
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            assert int(reply.headers["Retry-After"]) > 0
            break
    assert statuses[:6] == [401] * 6 and statuses[-1] == 429
    # The same throttle guards the sign-in form for this address and email.
    with stack.browser() as client:
        token = csrf_in(client.get("/sign-in").text)
        reply = client.post(
            "/sign-in",
            data={"email": ada.account["user"]["email"], "password": PASSWORD, "csrf_token": token},
            headers=headers,
        )
        assert reply.status_code == 429
