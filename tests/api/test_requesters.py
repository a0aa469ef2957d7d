"""Who may request a bundle (issue #17) through the real api, on SQLite and PostgreSQL.

"members": only a request from a terminal signed in (`envcat login`, a user token) as a
member of the workspace may be released from the bundle. Refused at creation when the
request names the bundle, and at approval when an approver picks it, whoever approves;
an owner's break-glass passes, audited as an override. A device grant on such a bundle
delivers only to the requester it was made for. No worker runs here: what matters is
what the api lets through and that a refusal leaves nothing behind. The browser half is
tests/bff/test_browser_requesters.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from nacl.signing import SigningKey
from sqlalchemy import select

from envcat.cli.device import signed_block
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.core.wire import POLL_TOKEN_HEADER
from envcat.models import AuditEvent, db
from envcat.services import user_tokens
from envcat.services.access_requests import delivery, store
from tests.support.api import REQUESTS, Cli, SeedKey, audit_actions, ensure_workspace, seed_bundle
from tests.support.settings import make_settings

TENANT = "t-acme"
BUNDLE = "production/api"
KEYS = [SeedKey("API_KEY", "sk-canary-requesters"), SeedKey("OTHER", "plain")]
# the attacks below do not depend on the database: SQLite only, to keep the suite fast
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """The rule on both database backends."""
    return make_settings(database_url, redis_url, broker_url)


def _ask(
    client: FlaskClient,
    token: str | None = None,
    device: SigningKey | None = None,
    workspace: str = TENANT,
    **hints: Any,
) -> Any:
    """POST /requests as the CLI does: optionally signed in and signed by a device key."""
    ensure_workspace(workspace)
    body: dict[str, Any] = {
        "client_pubkey": encode_public_key(generate_keypair()),
        "workspace": workspace,
        **hints,
    }
    if device is not None:
        body["device"] = signed_block(device, body)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(REQUESTS, json=body, headers=headers)


def _approve(signed: Any, request_id: str, bundle_id: str, hours: int | None = None) -> Any:
    body: dict[str, Any] = {"bundle_id": bundle_id, "include_keys": ["API_KEY"]}
    if hours is not None:
        body["grant_hours"] = hours
    return signed.post(f"{REQUESTS}/{request_id}/encrypt-from-bundle", json=body)


def _members_only(admin: Any, bundle_id: str) -> None:
    path = f"/api/v1/bundles/{bundle_id}/requesters"
    assert admin.put(path, json={"requesters": "members"}).status_code == 200


def _token(tenant_id: str, user_id: str) -> str:
    token, _ = user_tokens.issue(tenant_id, user_id, "laptop")
    return token


def test_the_rule_is_set_by_editing_admins_audited_and_tenant_scoped(signed_as: Any) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    member = signed_as("u-mem", TENANT, "member")
    stranger = signed_as("u-out", "t-other", "owner")
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    path = f"/api/v1/bundles/{bundle_id}/requesters"
    assert member.get(path).get_json() == {"requesters": "anyone"}  # the default
    assert member.put(path, json={"requesters": "members"}).status_code == 403
    for bad in ("everyone", "", None, 1, ["members"]):
        reply = admin.put(path, json={"requesters": bad})
        assert reply.status_code == 400 and reply.get_json()["error"] == "validation_error", bad
    assert admin.put(path, json={"requesters": "members", "extra": 1}).status_code == 400
    assert member.get(path).get_json() == {"requesters": "anyone"}  # refused writes: nothing
    assert stranger.get(path).status_code == 404
    assert stranger.put(path, json={"requesters": "members"}).status_code == 404
    assert admin.put(path, json={"requesters": "members"}).get_json() == {"requesters": "members"}
    assert ("bundle.requesters_changed", bundle_id) in audit_actions(TENANT)
    # an edit rule that leaves the admin out leaves this rule out of reach too
    editors = {"min_role": "owner", "user_ids": []}
    assert (
        signed_as("u-owner", TENANT, "owner")
        .put(f"/api/v1/bundles/{bundle_id}/editors", json=editors)
        .status_code
        == 200
    )
    refused = admin.put(path, json={"requesters": "anyone"})
    assert (refused.status_code, refused.get_json()["error"]) == (403, "not_an_editor")


def test_members_only_refuses_anonymous_requests_at_creation_and_at_approval(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    owner = signed_as("u-owner", TENANT, "owner")
    signed_as("u-viewer", TENANT, "viewer")
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    _members_only(admin, bundle_id)

    # named up front: refused before any link exists, by name, by id and device-signed alike
    for hints in ({"bundle": BUNDLE}, {"bundle_id": bundle_id}):
        for device in (None, SigningKey.generate()):
            refused = _ask(api_client, device=device, **hints)
            assert refused.status_code == 403, refused.get_json()
            assert refused.get_json()["error"] == "members_only"
            assert "envcat login" in refused.get_json()["message"]
    # unnamed: a link exists, but not even an owner may release this bundle to it
    anonymous = Cli.start(api_client)
    refused = _approve(owner, anonymous.id, bundle_id)
    assert (refused.status_code, refused.get_json()["error"]) == (403, "members_only")
    assert "envcat login" in refused.get_json()["message"]
    stored = store.get(redis_client, anonymous.id)
    assert stored is not None and stored.status == "pending" and stored.approval is None
    assert ("request.approved", anonymous.id) not in audit_actions(TENANT)

    # a signed-in member (any role, a viewer too) is released as before
    asked = _ask(api_client, _token(TENANT, "u-viewer"), bundle=BUNDLE)
    assert asked.status_code == 201, asked.get_json()
    approved = _approve(admin, asked.get_json()["id"], bundle_id)
    assert approved.status_code == 202, approved.get_json()
    # "anyone" again: the anonymous request may now be approved
    path = f"/api/v1/bundles/{bundle_id}/requesters"
    assert admin.put(path, json={"requesters": "anyone"}).status_code == 200
    assert _approve(owner, anonymous.id, bundle_id).status_code == 202


@sqlite_only
def test_another_workspaces_member_or_a_removed_one_does_not_count(
    api_client: FlaskClient, signed_as: Any
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    signed_as("u-eve", "t-eve", "owner")
    signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    _members_only(admin, bundle_id)
    # a member of another workspace cannot sign a request for this one
    eve = _ask(api_client, _token("t-eve", "u-eve"), bundle=BUNDLE)
    assert (eve.status_code, eve.get_json()["error"]) == (401, "invalid_user_token")
    # a member removed after asking: the approval finds no member requester
    asked = _ask(api_client, _token(TENANT, "u-bob"))
    assert asked.status_code == 201
    assert admin.delete("/api/v1/members/u-bob").status_code == 204
    refused = _approve(admin, asked.get_json()["id"], bundle_id)
    assert (refused.status_code, refused.get_json()["error"]) == (403, "members_only")


@sqlite_only
def test_a_service_token_is_the_admins_standing_decision_and_passes(
    api_client: FlaskClient, signed_as: Any
) -> None:
    owner = signed_as("u-owner", TENANT, "owner")
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    _members_only(owner, bundle_id)
    body = {"name": "ci", "bundle_id": bundle_id, "keys": ["API_KEY"]}
    made = owner.post("/api/v1/service-tokens", json=body)
    assert made.status_code == 201, made.get_json()
    asked = _ask(api_client, made.get_json()["token"], bundle=BUNDLE)
    assert asked.status_code == 201, asked.get_json()
    assert asked.get_json()["workload_mode"] == "automatic"


@sqlite_only
def test_break_glass_overrides_the_rule_loudly(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    owner = signed_as("u-owner", TENANT, "owner")
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    _members_only(owner, bundle_id)
    anonymous = Cli.start(api_client)
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"], "reason": "INC-7 prod down"}
    done = owner.post(f"{REQUESTS}/{anonymous.id}/break-glass", json=body)
    assert done.status_code == 202, done.get_json()
    db.session.expire_all()
    details = db.session.execute(
        select(AuditEvent.details).where(
            AuditEvent.action == "request.break_glass", AuditEvent.target == anonymous.id
        )
    ).scalar_one()
    assert details["requesters_overridden"] is True and details["reason"] == "INC-7 prod down"


@sqlite_only
def test_a_grant_on_a_members_only_bundle_serves_only_its_requester(
    api_client: FlaskClient, signed_as: Any
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    signed_as("u-alice", TENANT, "member")
    signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    admin.put(f"/api/v1/bundles/{bundle_id}/grant-policy", json={"max_hours": 4})
    device = SigningKey.generate()
    # a grant made for an anonymous request while the bundle was open to anyone…
    before = _ask(api_client, device=device, bundle=BUNDLE, template_keys=["API_KEY"])
    assert _approve(admin, before.get_json()["id"], bundle_id, hours=4).status_code == 202
    _members_only(admin, bundle_id)
    alice = _token(TENANT, "u-alice")
    # …does not serve the same device once the bundle is members-only
    waited = _ask(api_client, alice, device, bundle=BUNDLE, template_keys=["API_KEY"])
    assert waited.status_code == 201 and "grant_id" not in waited.get_json()
    # a grant made for alice's signed-in request serves alice from that device only
    assert _approve(admin, waited.get_json()["id"], bundle_id, hours=4).status_code == 202
    again = _ask(api_client, alice, device, bundle=BUNDLE, template_keys=["API_KEY"])
    assert again.status_code == 201 and again.get_json().get("grant_id"), again.get_json()
    bob = _ask(api_client, _token(TENANT, "u-bob"), device, bundle=BUNDLE)
    assert bob.status_code == 201 and "grant_id" not in bob.get_json()
    assert ("request.granted", again.get_json()["id"]) in audit_actions(TENANT)
    assert ("request.requested", again.get_json()["id"]) in audit_actions(TENANT)


def _run_queued_delivery(broker_url: str, request_id: str) -> None:
    """Run the request's queued encrypt_from_bundle exactly as the worker's task does."""
    broker = redis.Redis.from_url(broker_url)
    for raw in broker.lrange("approvals", 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        if message["headers"]["task"] == "envcat.encrypt_from_bundle" and args[0] == request_id:
            delivery.encrypt_from_bundle(*args)
            break
    else:
        raise AssertionError(f"no queued delivery for {request_id}")
    broker.close()


@sqlite_only
def test_a_grant_delivery_queued_before_the_bundle_became_members_only_releases_nothing(
    api_client: FlaskClient, signed_as: Any, broker_url: str, redis_client: redis.Redis
) -> None:
    """The api accepted a grant delivery; the task runs later (a deep queue), after an
    admin made the bundle members-only: the worker checks the rule again and fails it."""
    admin = signed_as("u-admin", TENANT, "admin")
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    admin.put(f"/api/v1/bundles/{bundle_id}/grant-policy", json={"max_hours": 4})
    device = SigningKey.generate()
    first = _ask(api_client, device=device, bundle=BUNDLE, template_keys=["API_KEY"])
    assert _approve(admin, first.get_json()["id"], bundle_id, hours=4).status_code == 202
    queued = _ask(api_client, device=device, bundle=BUNDLE, template_keys=["API_KEY"])
    assert queued.status_code == 201 and queued.get_json().get("grant_id"), queued.get_json()
    request_id = queued.get_json()["id"]
    _members_only(admin, bundle_id)  # while the delivery waits in the queue
    _run_queued_delivery(broker_url, request_id)
    stored = store.get(redis_client, request_id)
    assert stored is not None and stored.status == "failed"
    headers = {POLL_TOKEN_HEADER: queued.get_json()["poll_token"]}
    answer = api_client.get(f"{REQUESTS}/{request_id}/wait", headers=headers).get_json()
    assert answer["status"] == "failed" and "members only" in answer["message"], answer
    assert answer.get("ciphertext_base64") is None  # nothing was sealed
    assert ("request.failed", request_id) in audit_actions(TENANT)
