"""Issue #17 end to end on a live stack: invite by email, accept, named approvers, notices.

Real processes and receivers: the api, bff and Celery worker of the live stack, an
aiosmtpd server on loopback as SMTP_HOST and an HTTP webhook receiver on loopback.
Links are taken from the parsed emails and followed with real HTTP; the webhook's
HMAC signature is recomputed by the receiver's side here; a canary value is never
in any email or webhook body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.bff import (
    PASSWORD,
    Browser,
    add_key,
    create_bundle,
    csrf_in,
    module_stack,
    new_user,
    sign_in,
)
from tests.support.envelopes import open_delivery
from tests.support.inboxes import SmtpInbox, WebhookInbox
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

CANARY = "canary-team-7f3e-do-not-leak"
NOTIFY_CAP = 4
_LINK = re.compile(r"https?://\S+")


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str,
    redis_dbs: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
    inbox: SmtpInbox,
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url,
        redis_dbs,
        tmp_path_factory,
        smtp_host="127.0.0.1",
        smtp_port=inbox.port,
        smtp_from="envcat@example.test",
        webhook_allow_http_loopback=True,
        webhook_allow_private=True,
        notify_max_per_workspace=NOTIFY_CAP,
    ) as shared:
        yield shared


def _team(owner: Browser, name: str) -> dict[str, Any]:
    """Create a team workspace through the page; the session now acts in it."""
    slug = f"{name}-{uuid.uuid4().hex[:6]}"
    made = owner.post("/workspaces/new", {"name": name.title(), "slug": slug})
    assert made.status_code == 302, made.text
    me: dict[str, Any] = owner.get("/api/v1/me").json()
    assert me["tenant"]["slug"] == slug and me["role"] == "owner"
    owner.account = me
    owner.csrf = csrf_in(owner.get("/bundles").text)  # a new session has a new CSRF token
    return me


def _webhook(owner: Browser, url: str) -> str:
    """Set the workspace's webhook through the page; return the secret shown once."""
    page = owner.post("/members/notifications", {"webhook_url": url, "email_enabled": "on"})
    assert page.status_code == 200, page.text
    found = re.search(r'data-testid="webhook-secret">([^<]+)<', page.text)
    assert found is not None
    return found.group(1)


def _new_request(
    stack: LiveStack, workspace: str, bundle: str, ip: str
) -> tuple[Any, dict[str, Any]]:
    key = generate_keypair()
    body = {
        "client_pubkey": encode_public_key(key),
        "workspace": workspace,
        "bundle": bundle,
        "template_keys": ["API_TOKEN"],
        "context": {"hostname": "build-7", "command": "envcat run -- ./deploy <!channel>"},
    }
    reply = httpx.post(
        f"{stack.bff_url}/api/v1/requests", json=body, headers={"X-Forwarded-For": ip}
    )
    assert reply.status_code == 201, reply.text
    return key, reply.json()


def _verify(hook: Any, secret: str) -> None:
    timestamp = hook.headers["X-EnvCat-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + hook.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(hook.headers["X-EnvCat-Signature"], f"v1={expected}")
    assert abs(time.time() - int(timestamp)) < 60


def test_invite_accept_then_only_the_named_approver_approves_and_is_notified(
    stack: LiveStack, inbox: SmtpInbox, hooks: WebhookInbox
) -> None:
    owner = new_user(stack, "owner")
    team = _team(owner, "platform")
    slug = team["tenant"]["slug"]
    bundle_id = create_bundle(owner, "production/api")
    add_key(owner, bundle_id, "API_TOKEN", CANARY, is_secret="on")
    secret = _webhook(owner, hooks.url)

    # Invite bob by email: the link is on the page once and in the email.
    bob_email = f"bob-{uuid.uuid4().hex[:6]}@example.test"
    page = owner.post("/members/invite", {"email": bob_email.upper(), "role": "member"})
    assert page.status_code == 201, page.text
    shown = re.search(r'data-testid="invite-link">([^<]+)<', page.text)
    assert shown is not None
    mail = inbox.wait_for(lambda m: m["To"] == bob_email)
    assert "invited you to Platform" in mail.get_content()
    link = next(u for u in _LINK.findall(mail.get_content()) if "/invites/accept" in u)
    assert link == shown.group(1).replace("&amp;", "&")
    # Bob signs up, follows the link from the email with real HTTP and joins.
    bob = sign_in(stack, bob_email, stack.sign_up(bob_email, PASSWORD))
    parts = urlsplit(link)
    confirm = bob.get(f"{parts.path}?{parts.query}")
    assert confirm.status_code == 200 and "Join the workspace" in confirm.text
    token = re.search(r'name="token" value="([^"]+)"', confirm.text)
    assert token is not None
    joined = bob.post("/invites/accept", {"token": token.group(1)})
    assert joined.status_code == 302, joined.text
    bob.account = bob.get("/api/v1/me").json()
    bob.csrf = csrf_in(bob.get("/bundles").text)
    assert bob.account["tenant"]["slug"] == slug and bob.account["role"] == "member"
    again = bob.post("/invites/accept", {"token": token.group(1)})
    assert again.status_code == 410

    # Only bob may approve production/api.
    saved = owner.post(
        f"/bundles/{bundle_id}/approvers", {"min_role": "none", "user_ids": bob.user_id}
    )
    assert saved.status_code == 302
    assert "only" in owner.get(f"/bundles/{bundle_id}").text

    key, created = _new_request(stack, slug, "production/api", "198.51.100.7")
    notice = inbox.wait_for(lambda m: m["To"] == bob_email and created["user_code"] in m["Subject"])
    assert not [m for m in inbox.messages if m["To"] == owner.account["user"]["email"]]
    approve_link = next(u for u in _LINK.findall(notice.get_content()) if "/approve/" in u)
    assert approve_link == created["verification_uri_complete"]
    hook = hooks.wait_for(lambda h: h.json().get("request_id") == created["id"])
    _verify(hook, secret)
    event = hook.json()
    assert event["event"] == "request.created" and event["workspace"] == slug
    assert event["bundle"] == "production/api"
    assert event["verification_phrase"] == created["user_code"]
    assert "<!channel>" not in event["text"] and "&lt;!channel&gt;" in event["text"]

    # The owner is not a named approver: refused with a clear 403, page and api alike.
    form = {"bundle_id": bundle_id, "include_keys": "API_TOKEN"}
    refused = owner.post(f"/approve/{created['id']}", form)
    assert refused.status_code == 403 and "may approve this bundle" in refused.text
    with stack.signed(owner.user_id, owner.tenant_id) as api:
        direct = api.post(
            f"/api/v1/requests/{created['id']}/encrypt-from-bundle",
            json={"bundle_id": bundle_id, "include_keys": ["API_TOKEN"]},
        )
    assert (direct.status_code, direct.json()["error"]) == (403, "not_an_approver")

    # Bob follows the emailed approval link and approves; the CLI gets the value.
    shown_page = bob.get(urlsplit(approve_link).path)
    assert shown_page.status_code == 200 and created["user_code"] in shown_page.text
    approved = bob.post(urlsplit(approve_link).path, form)
    assert approved.status_code == 200, approved.text
    waited = httpx.get(
        f"{stack.bff_url}/api/v1/requests/{created['id']}/wait?timeout=20",
        headers={"X-Poll-Token": created["poll_token"]},
        timeout=30,
    )
    assert waited.json()["status"] == "ready"
    assert open_delivery(key, waited.json()["ciphertext_base64"]) == {"API_TOKEN": CANARY}
    decided = hooks.wait_for(
        lambda h: (
            h.json().get("request_id") == created["id"] and h.json()["event"] == "request.approved"
        )
    )
    _verify(decided, secret)
    assert decided.json()["decided_by"] == bob_email and decided.json()["keys"] == ["API_TOKEN"]

    # No value in any email or webhook body.
    for raw in inbox.raw:
        assert CANARY.encode() not in raw
    for seen in hooks.hooks:
        assert CANARY.encode() not in seen.body


def test_anonymous_request_spam_is_deduplicated_and_capped_per_workspace(
    stack: LiveStack, inbox: SmtpInbox, hooks: WebhookInbox
) -> None:
    owner = new_user(stack, "spam-owner")
    slug = _team(owner, "target")["tenant"]["slug"]
    create_bundle(owner, "prod/db")
    owner_email = owner.account["user"]["email"]
    _webhook(owner, hooks.url)

    def notices() -> list[Any]:
        return [h for h in hooks.hooks if h.json().get("workspace") == slug]

    # The same address asking again and again for the same bundle: one notice.
    first: list[dict[str, Any]] = []
    for _ in range(5):
        first.append(_new_request(stack, slug, "prod/db", "203.0.113.9")[1])
    hooks.wait_for(lambda h: h.json().get("request_id") == first[0]["id"])
    # Many addresses: at most NOTIFY_CAP notices in the hour, however many requests.
    for n in range(NOTIFY_CAP * 3):
        _new_request(stack, slug, "prod/db", f"203.0.113.{20 + n}")
    # A marker from another workspace: the solo worker takes the queue in order, so once
    # its notice arrives every notice queued before it has been delivered.
    _team(owner, "marker")
    create_bundle(owner, "prod/db")
    _webhook(owner, hooks.url)
    marker_slug = owner.account["tenant"]["slug"]
    _, marker = _new_request(stack, marker_slug, "prod/db", "192.0.2.1")
    hooks.wait_for(lambda h: h.json().get("request_id") == marker["id"])
    assert len(notices()) == NOTIFY_CAP
    emails = [m for m in inbox.messages if m["To"] == owner_email and slug in m["Subject"]]
    assert len(emails) == NOTIFY_CAP


def test_a_wrong_account_cannot_use_an_invitation_and_outsiders_see_no_members(
    stack: LiveStack, inbox: SmtpInbox
) -> None:
    owner = new_user(stack, "inviter")
    slug = _team(owner, "closed")["tenant"]["slug"]
    meant = f"carol-{uuid.uuid4().hex[:6]}@example.test"
    page = owner.post("/members/invite", {"email": meant, "role": "admin"})
    link = re.search(r'data-testid="invite-link">([^<]+)<', page.text)
    assert link is not None
    token = urlsplit(link.group(1).replace("&amp;", "&")).query.removeprefix("token=")
    mallory = new_user(stack, "mallory")
    stolen = mallory.post("/invites/accept", {"token": token})
    assert stolen.status_code == 403 and "another email address" in stolen.text
    listed = mallory.get("/api/v1/workspaces").json()["workspaces"]
    assert slug not in [w["slug"] for w in listed]
    csrf_in(mallory.get("/members").text)  # her own members page works
    with stack.signed(mallory.user_id, owner.tenant_id) as api:
        assert api.get("/api/v1/members").status_code == 404


def test_a_denial_is_announced_on_the_signed_webhook(stack: LiveStack, hooks: WebhookInbox) -> None:
    owner = new_user(stack, "denier")
    slug = _team(owner, "denials")["tenant"]["slug"]
    create_bundle(owner, "prod/web")
    secret = _webhook(owner, hooks.url)
    _, created = _new_request(stack, slug, "prod/web", "198.51.100.40")
    hooks.wait_for(lambda h: h.json().get("request_id") == created["id"])
    denied = owner.post(f"/approve/{created['id']}", {"decision": "deny"})
    assert denied.status_code == 200
    hook = hooks.wait_for(
        lambda h: (
            h.json().get("request_id") == created["id"] and h.json()["event"] == "request.denied"
        )
    )
    _verify(hook, secret)
    assert hook.json()["decided_by"] == owner.account["user"]["email"]
    assert hook.json()["workspace"] == slug
