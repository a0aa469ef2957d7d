"""Groups (teams), per-bundle editors and break-glass (issue #17) through the real api,
on SQLite and PostgreSQL.

No worker runs here: what matters is who the api lets decide or edit, and that a
refused call leaves nothing behind. The delivery, the notices and the CLI's
warning of a break-glass release are end to end in tests/security/test_break_glass.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from envcat.models import GroupMember, db
from envcat.services.access_requests import store
from tests.api.test_approvers import KEYS, TENANT, _approve, settings
from tests.api.test_passkeys import ORIGIN, RP_ID, register, statement
from tests.support.api import REQUESTS, Cli, audit_actions, seed_bundle
from tests.support.passkeys import SoftPasskey

__all__ = ["settings"]  # both database backends for every test, as for the approver rules


def _break_glass(signed: Any, request_id: str, bundle_id: str, reason: Any) -> Any:
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"], "reason": reason}
    return signed.post(f"{REQUESTS}/{request_id}/break-glass", json=body)


def _group(admin: Any, name: str, user_ids: list[str]) -> str:
    made = admin.post("/api/v1/groups", json={"name": name, "user_ids": user_ids})
    assert made.status_code == 201, made.get_json()
    return str(made.get_json()["id"])


def test_a_group_named_by_the_rule_may_approve_and_a_non_member_may_not(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    alice = signed_as("u-alice", TENANT, "member")
    bob = signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    sre = _group(admin, "sre", ["u-alice"])
    rule = {"min_role": None, "group_ids": [sre]}
    saved = admin.put(f"/api/v1/bundles/{bundle_id}/approvers", json=rule)
    assert saved.status_code == 200, saved.get_json()
    assert [g["name"] for g in saved.get_json()["groups"]] == ["sre"]
    assert alice.get(f"/api/v1/bundles/{bundle_id}/approvers").get_json()["can_approve"]
    cli = Cli.start(api_client)
    refused = _approve(bob, cli.id, bundle_id)
    assert (refused.status_code, refused.get_json()["error"]) == (403, "not_an_approver")
    assert store.get(redis_client, cli.id).approval is None  # type: ignore[union-attr]
    assert _approve(alice, cli.id, bundle_id).status_code == 202
    actions = audit_actions(TENANT)
    assert ("group.created", sre) in actions and ("request.approved", cli.id) in actions


def test_removal_from_the_workspace_drops_group_rights(
    api_client: FlaskClient, signed_as: Any
) -> None:
    owner = signed_as("u-owner", TENANT, "owner")
    alice = signed_as("u-alice", TENANT, "member")
    signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    sre = _group(owner, "sre", ["u-alice", "u-bob"])
    rule = {"min_role": None, "group_ids": [sre]}
    assert owner.put(f"/api/v1/bundles/{bundle_id}/approvers", json=rule).status_code == 200
    assert owner.delete("/api/v1/members/u-alice").status_code == 204
    assert db.session.get(GroupMember, (sre, "u-alice")) is None  # the row went with her
    listed = owner.get(f"/api/v1/groups/{sre}").get_json()
    assert [m["user_id"] for m in listed["members"]] == ["u-bob"]
    # even re-admitted as a member she is not back in the group
    signed_as("u-alice", TENANT, "member")
    cli = Cli.start(api_client)
    assert _approve(alice, cli.id, bundle_id).get_json()["error"] == "not_an_approver"


def test_k_above_the_eligible_approvers_counts_group_members(signed_as: Any) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    for user in ("u-alice", "u-bob", "u-carol"):
        signed_as(user, TENANT, "member")
    signed_as("u-view", TENANT, "viewer")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    sre = _group(admin, "sre", ["u-alice", "u-bob", "u-view"])  # a viewer never approves
    path = f"/api/v1/bundles/{bundle_id}/approvers"
    too_many = admin.put(path, json={"min_role": None, "group_ids": [sre], "approvals_required": 3})
    assert too_many.status_code == 400 and "only 2 members" in too_many.get_json()["message"]
    assert admin.get(path).get_json()["is_default"]  # nothing was written
    both = {"min_role": None, "user_ids": ["u-carol"], "group_ids": [sre], "approvals_required": 3}
    assert admin.put(path, json=both).status_code == 200
    signed_as("u-eve", "t-eve", "owner")
    eve = _group(signed_as("u-eve", "t-eve", "owner"), "theirs", [])
    stranger = admin.put(path, json={"min_role": None, "group_ids": [eve]})
    assert (stranger.status_code, stranger.get_json()["details"][0]["loc"]) == (400, ["group_ids"])
    in_use = admin.delete(f"/api/v1/groups/{sre}")
    assert (in_use.status_code, in_use.get_json()["error"]) == (409, "group_in_use")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # CRUD, not a policy
def test_groups_are_admin_managed_unique_and_tenant_scoped(signed_as: Any) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    member = signed_as("u-mem", TENANT, "member")
    eve = signed_as("u-eve", "t-eve", "owner")
    sre = _group(admin, "sre", [])
    assert admin.post("/api/v1/groups", json={"name": "sre"}).status_code == 409
    assert member.post("/api/v1/groups", json={"name": "ops"}).status_code == 403
    assert (
        admin.post("/api/v1/groups", json={"name": "ops", "user_ids": ["u-eve"]}).status_code == 400
    )
    assert admin.post("/api/v1/groups", json={"name": "  "}).status_code == 400
    for call in (eve.get, eve.delete):
        assert call(f"/api/v1/groups/{sre}").status_code == 404
    assert eve.patch(f"/api/v1/groups/{sre}", json={"name": "x"}).status_code == 404
    assert eve.get("/api/v1/groups").get_json()["groups"] == []
    renamed = admin.patch(f"/api/v1/groups/{sre}", json={"name": "oncall", "user_ids": ["u-mem"]})
    assert renamed.get_json()["name"] == "oncall"
    assert admin.delete(f"/api/v1/groups/{sre}").status_code == 204


def test_who_may_edit_defaults_to_admins_and_a_rule_admits_a_group(signed_as: Any) -> None:
    owner = signed_as("u-owner", TENANT, "owner")
    admin = signed_as("u-admin", TENANT, "admin")
    alice = signed_as("u-alice", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    path = f"/api/v1/bundles/{bundle_id}"
    assert alice.patch(path, json={"description": "x"}).status_code == 403
    assert admin.patch(path, json={"description": "by admin"}).status_code == 200
    devs = _group(owner, "devs", ["u-alice"])
    rule = {"min_role": "owner", "group_ids": [devs]}
    assert owner.put(f"{path}/editors", json=rule).get_json()["can_edit"]
    assert alice.patch(path, json={"description": "by alice"}).status_code == 200
    narrowed = admin.patch(path, json={"description": "no"})
    assert (narrowed.status_code, narrowed.get_json()["error"]) == (403, "not_an_editor")
    key_id = admin.get(path).get_json()["keys"][0]["id"]
    assert admin.patch(f"/api/v1/keys/{key_id}", json={"value": "x"}).status_code == 403
    assert admin.put(f"{path}/approvers", json={"min_role": "member"}).status_code == 403
    assert admin.put(f"{path}/editors", json={"min_role": "admin"}).status_code == 403
    assert ("bundle.editors_changed", bundle_id) in audit_actions(TENANT)


def test_break_glass_is_an_owners_alone_with_a_reason(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    owner = signed_as("u-owner", TENANT, "owner")
    admin = signed_as("u-admin", TENANT, "admin")
    signed_as("u-alice", TENANT, "member")
    signed_as("u-bob", TENANT, "member")
    other_owner = signed_as("u-eve", "t-eve", "owner")
    eve_bundle = seed_bundle("t-eve", "production/api", KEYS)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    rule = {"min_role": None, "user_ids": ["u-alice", "u-bob"], "approvals_required": 2}
    assert admin.put(f"/api/v1/bundles/{bundle_id}/approvers", json=rule).status_code == 200
    cli = Cli.start(api_client)
    assert _approve(owner, cli.id, bundle_id).get_json()["error"] == "not_an_approver"
    refused = _break_glass(admin, cli.id, bundle_id, "prod is down")
    assert (refused.status_code, refused.get_json()["error"]) == (403, "break_glass_owner_only")
    for reason in ("", "   ", "x" * 501, "line\nbreak", None):
        assert _break_glass(owner, cli.id, bundle_id, reason).status_code == 400, reason
    assert (
        owner.post(
            f"{REQUESTS}/{cli.id}/break-glass",
            json={"bundle_id": bundle_id, "include_keys": ["API_KEY"]},
        ).status_code
        == 400
    )
    # another workspace's owner: the request does not exist for them
    assert _break_glass(other_owner, cli.id, eve_bundle, "mine now").status_code == 404
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is None
    assert not [a for a in audit_actions(TENANT) if a[0] == "request.break_glass"]
    # a workspace that requires passkeys requires the owner's too (issue #20)
    assert owner.put("/api/v1/workspace/policy", json={"require_passkey": True}).status_code == 200
    unsigned = _break_glass(owner, cli.id, bundle_id, "prod is down")
    assert (unsigned.status_code, unsigned.get_json()["error"]) == (403, "passkey_required")
    key = SoftPasskey.es256("owner-key")
    register(owner, key)
    # the passkey signs the release with its reason, as the api reads it (stripped)
    released = statement(cli, bundle_id, ["API_KEY"], break_glass="INC-42")
    signed = key.assertion(released, origin=ORIGIN, rp_id=RP_ID)
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"], "passkey": signed}
    done = owner.post(f"{REQUESTS}/{cli.id}/break-glass", json={**body, "reason": " INC-42 "})
    assert done.status_code == 202, done.get_json()
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is not None
    assert stored.approval.break_glass == "INC-42" and stored.approval.passkey  # the owner's
    actions = audit_actions(TENANT)
    assert ("request.break_glass", cli.id) in actions and ("request.approved", cli.id) in actions
    assert _break_glass(owner, cli.id, bundle_id, "again").status_code == 409


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("ordinary_statement", "signed an ordinary approval, not this break-glass release"),
        ("another_reason", "signed another break-glass reason than this one"),
        ("break_glass_statement_approving", "signed a break-glass release, not this approval"),
    ],
)
def test_a_passkey_signature_serves_only_the_release_and_reason_it_signed(
    api_client: FlaskClient,
    signed_as: Any,
    redis_client: redis.Redis,
    broker_url: str,
    attack: str,
    message: str,
) -> None:
    """Issue #20: the break-glass reason is in the signed statement, so the owner's
    ordinary approval cannot become a break-glass release, nor the reverse, and a
    release cannot carry another reason than the one the passkey signed."""
    owner = signed_as("u-owner", TENANT, "owner")
    signed_as("u-alice", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    approving = attack == "break_glass_statement_approving"
    if not approving:  # alice alone approves: the owner may only break glass
        rule = {"min_role": None, "user_ids": ["u-alice"]}
        assert owner.put(f"/api/v1/bundles/{bundle_id}/approvers", json=rule).status_code == 200
    key = SoftPasskey.es256("owner-key")
    register(owner, key)
    cli = Cli.start(api_client)
    signed_reason = "" if attack == "ordinary_statement" else "INC-42 checkout down"
    passkey = key.assertion(
        statement(cli, bundle_id, ["API_KEY"], break_glass=signed_reason),
        origin=ORIGIN,
        rp_id=RP_ID,
    )
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"]}
    if approving:  # the owner may approve this bundle: the statement alone is wrong
        path, right = f"{REQUESTS}/{cli.id}/encrypt-from-bundle", ""
    else:
        path, right = f"{REQUESTS}/{cli.id}/break-glass", "INC-42 checkout down"
        body["reason"] = "routine rotation" if attack == "another_reason" else right
    broker = redis.Redis.from_url(broker_url)
    queued = broker.llen("approvals")
    refused = owner.post(path, json={**body, "passkey": passkey})
    assert refused.status_code == 400, refused.get_json()
    assert refused.get_json()["error"] == "validation_error"
    assert message in refused.get_json()["message"]
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.status == "pending" and stored.approval is None
    assert broker.llen("approvals") == queued  # nothing was queued for a worker
    actions = audit_actions(TENANT)
    assert ("request.break_glass", cli.id) not in actions
    assert ("request.approved", cli.id) not in actions
    # the owner's passkey over exactly this decision passes: only the statement was wrong
    if not approving:
        body["reason"] = right
    good = statement(cli, bundle_id, ["API_KEY"], break_glass=right)
    passkey = key.assertion(good, origin=ORIGIN, rp_id=RP_ID)
    accepted = owner.post(path, json={**body, "passkey": passkey})
    assert accepted.status_code == 202, accepted.get_json()
    assert broker.llen("approvals") == queued + 1
    broker.close()
