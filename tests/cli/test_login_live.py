"""`envcat login` and requester identity end to end (issues #16, #17).

One live stack (real api, bff, Celery worker, Redis, SQLite) for the module; the
CLI as a real subprocess where it is the subject; people as cookie-keeping httpx
browsers. A terminal's token is sealed to the CLI that asked, expires, is revoked by
`envcat logout`, acts in its own workspace only, never approves, and names the
requester, whom a `no_self_approval` bundle refuses as approver.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from envcat.core.sealing import SealingError, encode_public_key, generate_keypair, open_values
from envcat.models import AuditEvent, UserToken, db, utcnow
from tests.support.bff import Browser, add_key, create_bundle, module_stack, new_user
from tests.support.signed import add_member
from tests.support.stack import LiveStack

ENVCAT = [sys.executable, "-m", "envcat.cli.main"]
_LINK = re.compile(r"(http://\S+/approve/([A-Za-z0-9_-]+))")


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(redis_base_url, redis_dbs, tmp_path_factory) as shared:
        yield shared


def _environ(stack: LiveStack, slug: str, home: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ENVCAT_")}
    return {
        **base,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "ENVCAT_SERVER": stack.bff_url,
        "ENVCAT_WORKSPACE": slug,
        "ENVCAT_TOKEN_STORE": "file",
    }


def _start(
    stack: LiveStack, slug: str, home: Path, *args: str
) -> tuple[subprocess.Popen[str], str]:
    """Start `envcat ARGS`; return the process and the request id of the link it shows."""
    process = subprocess.Popen(
        [*ENVCAT, *args, "--no-qr", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environ(stack, slug, home),
        cwd=home,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if match := _LINK.search(line):
            return process, match.group(2)
    process.wait(timeout=10)
    raise AssertionError(f"no approval link shown (exit {process.returncode})")


def _envcat(
    stack: LiveStack, slug: str, home: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENVCAT, *args],
        capture_output=True,
        text=True,
        env=_environ(stack, slug, home),
        cwd=home,
        timeout=60,
        check=False,
    )


def _login_http(stack: LiveStack, person: Browser) -> str:
    """Sign a terminal in at the HTTP level (no subprocess): return its token."""
    key = generate_keypair()
    created = httpx.post(
        f"{stack.bff_url}/api/v1/logins",
        json={"client_pubkey": encode_public_key(key), "workspace": person.workspace},
        timeout=30,
    ).json()
    assert person.post(f"/approve/{created['id']}", {"decision": "sign_in"}).status_code == 200
    waited = httpx.get(
        f"{stack.bff_url}/api/v1/requests/{created['id']}/wait?timeout=10",
        headers={"X-Poll-Token": created["poll_token"]},
        timeout=30,
    ).json()
    return open_values(key, base64.b64decode(waited["ciphertext_base64"]))["token"]


def _request(stack: LiveStack, slug: str, token: str | None, **hints: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": slug, **hints}
    return httpx.post(f"{stack.bff_url}/api/v1/requests", json=body, headers=headers, timeout=30)


def _bearer(stack: LiveStack, method: str, path: str, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.request(method, f"{stack.bff_url}{path}", headers=headers, timeout=30)


def test_login_round_trip_whoami_requester_and_logout(stack: LiveStack, tmp_path: Path) -> None:
    ada = new_user(stack, "ada")
    email = ada.account["user"]["email"]
    process, request_id = _start(stack, ada.workspace, tmp_path, "login")
    page = ada.get(f"/approve/{request_id}")
    assert page.status_code == 200 and "Sign in this terminal" in page.text
    assert ada.post(f"/approve/{request_id}", {"decision": "sign_in"}).status_code == 200
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"Signed in to {ada.workspace} as {email}" in err and "file store" in err

    stored = tmp_path / "config" / "envcat" / "tokens.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    token = json.loads(next(iter(json.loads(stored.read_text()).values())))["token"]
    assert token.startswith("ecu_") and token not in err
    with stack.api_app.app_context():
        row = db.session.scalars(select(UserToken).where(UserToken.user_id == ada.user_id)).one()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert row.last_used_at is not None  # login's own whoami used it

    who = _envcat(stack, ada.workspace, tmp_path, "whoami")
    assert who.returncode == 0 and who.stdout.startswith(f"{email} in {ada.workspace} (owner)")
    assert "terminal-name" in ada.get("/account").text

    # `envcat get` from the signed-in terminal names its requester on the approval page.
    getter, asked = _start(stack, ada.workspace, tmp_path, "get", "-k", "API_TOKEN")
    shown = ada.get(f"/approve/{asked}").text
    getter.terminate()  # SIGTERM: the CLI cancels its request
    getter.communicate(timeout=30)
    assert f"Requested by <strong>{email}</strong>" in shown
    with stack.api_app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.target == asked)).all()
        assert [(e.action, e.actor) for e in events][:1] == [("request.requested", ada.user_id)]

    out = _envcat(stack, ada.workspace, tmp_path, "logout")
    assert out.returncode == 0 and "revoked" in out.stderr
    assert token not in stored.read_text()
    assert _bearer(stack, "GET", "/api/v1/logins/whoami", token).status_code == 401
    assert _request(stack, ada.workspace, token).status_code == 401
    again = _envcat(stack, ada.workspace, tmp_path, "whoami")
    assert again.returncode == 1 and "not signed in" in again.stderr


def test_a_link_holder_who_is_not_the_approver_cannot_obtain_the_token(
    stack: LiveStack, redis_base_url: str
) -> None:
    ada, mallory = new_user(stack, "ada"), new_user(stack, "mallory")
    key = generate_keypair()
    created = httpx.post(
        f"{stack.bff_url}/api/v1/logins",
        json={"client_pubkey": encode_public_key(key), "workspace": ada.workspace},
        timeout=30,
    ).json()
    # Mallory holds the link but is no member of ada's workspace: nothing to approve.
    assert mallory.get(f"/approve/{created['id']}").status_code == 404
    refused = mallory.post(f"/approve/{created['id']}", {"decision": "sign_in"})
    assert refused.status_code == 404
    assert ada.post(f"/approve/{created['id']}", {"decision": "sign_in"}).status_code == 200
    # Redis holds only the sealed token: dump every value before the CLI collects it.
    data_url = str(stack.settings.redis_url)
    with redis.Redis.from_url(data_url) as r:
        dump = b"".join(
            repr(r.hgetall(k)).encode() if r.type(k) == b"hash" else repr(r.dump(k)).encode()
            for k in r.scan_iter()
        )
    wait = f"{stack.bff_url}/api/v1/requests/{created['id']}/wait"
    for poll_token in ("", "not-the-poll-token"):
        stolen = httpx.get(wait, headers={"X-Poll-Token": poll_token}, timeout=30)
        assert stolen.status_code == 401
    got = httpx.get(wait, headers={"X-Poll-Token": created["poll_token"]}, timeout=30).json()
    sealed = base64.b64decode(got["ciphertext_base64"])
    with pytest.raises(SealingError):
        open_values(generate_keypair(), sealed)  # anybody else's key
    token = open_values(key, sealed)["token"]
    assert token.encode() not in dump and token.split("_")[1].encode() not in dump
    # A sign-in request never releases values, and a values request never signs in.
    values = _request(stack, ada.workspace, None).json()
    wrong = ada.post(f"/approve/{values['id']}", {"decision": "sign_in"})
    assert wrong.status_code == 409


def test_an_expired_token_and_another_tenants_token_do_nothing(stack: LiveStack) -> None:
    ada, mallory = new_user(stack, "ada"), new_user(stack, "mallory")
    create_bundle(ada, "ada/app")
    mallory_bundle = create_bundle(mallory, "mallory/secret")
    token = _login_http(stack, ada)
    # Acting in its own workspace only: administration yes, another tenant's objects no.
    listed = _bearer(stack, "GET", "/api/v1/bundles", token).json()["bundles"]
    assert [b["name"] for b in listed] == ["ada/app"]
    foreign = _bearer(stack, "GET", f"/api/v1/bundles/{mallory_bundle}", token)
    assert foreign.status_code == 404
    assert _request(stack, mallory.workspace, token).status_code == 401
    # Never a decision or a value, not even in its own workspace.
    own = _request(stack, ada.workspace, None).json()
    for path in (f"/api/v1/requests/{own['id']}/deny", f"/api/v1/requests/{own['id']}/sign-in"):
        assert _bearer(stack, "POST", path, token).status_code == 403
    keys = _bearer(stack, "GET", "/api/v1/keys?reveal=true", token)
    assert keys.status_code == 403
    # Expiry: the clock moved past it (set on the row, no sleep).
    with stack.api_app.app_context():
        row = db.session.scalars(select(UserToken).where(UserToken.user_id == ada.user_id)).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert _bearer(stack, "GET", "/api/v1/logins/whoami", token).status_code == 401
    assert _bearer(stack, "GET", "/api/v1/bundles", token).status_code == 401
    assert _request(stack, ada.workspace, token).status_code == 401


def test_the_page_names_the_requester_and_no_self_approval_refuses_them(
    stack: LiveStack,
) -> None:
    ada, bob = new_user(stack, "ada"), new_user(stack, "bob")
    bundle_id = create_bundle(ada, "production/api")
    add_key(ada, bundle_id, "API_TOKEN", "canary-self-approval")
    with stack.api_app.app_context():
        add_member(bob.user_id, ada.tenant_id, "member")
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        rule = api.put(
            f"/api/v1/bundles/{bundle_id}/approvers",
            json={"min_role": "member", "no_self_approval": True},
        )
    assert rule.status_code == 200 and rule.json()["no_self_approval"] is True
    anonymous = _request(stack, ada.workspace, None, bundle="production/api").json()
    assert "not signed in" in ada.get(f"/approve/{anonymous['id']}").text

    token = _login_http(stack, ada)
    created = _request(stack, ada.workspace, token, bundle="production/api").json()
    page = ada.get(f"/approve/{created['id']}").text
    assert f"Requested by <strong>{ada.account['user']['email']}</strong>" in page
    assert "may not approve their own request" in page
    form = {"bundle_id": bundle_id, "include_keys": "API_TOKEN"}
    refused = ada.post(f"/approve/{created['id']}", form)
    assert refused.status_code == 403 and "ask another approver" in refused.text
    body = {"bundle_id": bundle_id, "include_keys": ["API_TOKEN"]}
    path = f"/api/v1/requests/{created['id']}/encrypt-from-bundle"
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        direct = api.post(path, json=body)
    assert (direct.status_code, direct.json()["error"]) == (403, "self_approval")
    with stack.signed(bob.user_id, ada.tenant_id) as api:
        assert api.post(path, json=body).status_code == 202
    with stack.api_app.app_context():
        approved = db.session.scalars(
            select(AuditEvent).where(
                AuditEvent.target == created["id"], AuditEvent.action == "request.approved"
            )
        ).one()
        assert approved.actor == bob.user_id
        assert approved.details["requested_by"] == ada.account["user"]["email"]
