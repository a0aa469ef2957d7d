"""Per-bundle approvers (issue #17) through the real api, on SQLite and PostgreSQL.

No worker runs: an accepted approval waits in the real broker; what matters here
is who the api lets decide, and that a refused approval leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from envcat.core.settings import Settings
from envcat.services.access_requests import store
from tests.support.api import REQUESTS, Cli, SeedKey, audit_actions, seed_bundle
from tests.support.audit_faults import refused_audit
from tests.support.settings import make_settings
from tests.support.signed import SignedClient

TENANT = "t-acme"
KEYS = [SeedKey("API_KEY", "sk-canary-approvers")]


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """Both database backends for every test of this module."""
    return make_settings(database_url, redis_url, broker_url)


def _approve(signed: Any, request_id: str, bundle_id: str) -> Any:
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"]}
    return signed.post(f"{REQUESTS}/{request_id}/encrypt-from-bundle", json=body)


def _rules(admin: Any, bundle_id: str, body: dict[str, Any]) -> Any:
    return admin.call("PUT", f"/api/v1/bundles/{bundle_id}/approvers", body)


def test_by_default_every_member_may_approve_and_viewers_may_not(
    api_client: FlaskClient, signed_as: Any
) -> None:
    member = signed_as("u-mem", TENANT, "member")
    viewer = signed_as("u-view", TENANT, "viewer")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    shown = member.get(f"/api/v1/bundles/{bundle_id}/approvers").get_json()
    assert shown["is_default"] and shown["min_role"] == "member" and shown["can_approve"]
    assert not viewer.get(f"/api/v1/bundles/{bundle_id}/approvers").get_json()["can_approve"]
    cli = Cli.start(api_client)
    assert _approve(viewer, cli.id, bundle_id).status_code == 403
    assert _approve(member, cli.id, bundle_id).status_code == 202


def test_named_approvers_only_and_a_refused_member_leaves_nothing_behind(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    alice = signed_as("u-alice", TENANT, "member")
    bob = signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    saved = _rules(admin, bundle_id, {"min_role": None, "user_ids": ["u-alice"]})
    assert saved.status_code == 200, saved.get_json()
    body = saved.get_json()
    assert body["min_role"] is None and [u["user_id"] for u in body["users"]] == ["u-alice"]
    assert not body["can_approve"]  # the admin is not named
    cli = Cli.start(api_client)
    for refused in (_approve(bob, cli.id, bundle_id), _approve(admin, cli.id, bundle_id)):
        assert (refused.status_code, refused.get_json()["error"]) == (403, "not_an_approver")
        assert "may approve this bundle" in refused.get_json()["message"]
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.status == "pending" and stored.approval is None
    assert ("request.approved", cli.id) not in audit_actions(TENANT)
    assert _approve(alice, cli.id, bundle_id).status_code == 202
    assert ("request.approved", cli.id) in audit_actions(TENANT)
    assert ("bundle.approvers_changed", bundle_id) in audit_actions(TENANT)


def test_a_minimum_role_and_the_outsider_still_gets_404(
    api_client: FlaskClient, signed_as: Any
) -> None:
    owner = signed_as("u-owner", TENANT, "owner")
    member = signed_as("u-mem", TENANT, "member")
    admin = signed_as("u-admin", TENANT, "admin")
    outsider = signed_as("u-eve", "t-eve", "owner")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    eve_bundle = seed_bundle("t-eve", "production/api", KEYS)
    assert _rules(owner, bundle_id, {"min_role": "admin"}).status_code == 200
    cli = Cli.start(api_client)
    assert _approve(member, cli.id, bundle_id).get_json()["error"] == "not_an_approver"
    # another workspace's member: the request does not exist for them, rule or not
    theirs = _approve(outsider, cli.id, eve_bundle)
    assert (theirs.status_code, theirs.get_json()["error"]) == (404, "not_found")
    spoof = SignedClient(outsider.client, outsider.secret, "u-eve", TENANT)
    assert _approve(spoof, cli.id, bundle_id).status_code == 404
    assert outsider.get(f"/api/v1/bundles/{bundle_id}/approvers").status_code == 404
    assert _rules(outsider, bundle_id, {"min_role": "member"}).status_code == 404
    assert _approve(admin, cli.id, bundle_id).status_code == 202


def test_rules_are_checked_when_written(signed_as: Any) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    member = signed_as("u-mem", TENANT, "member")
    signed_as("u-view", TENANT, "viewer")
    signed_as("u-eve", "t-eve", "owner")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"min_role": None, "user_ids": []}, 400),  # nobody could approve
        ({"min_role": None, "user_ids": ["u-view"]}, 400),  # viewers never approve
        ({"min_role": None, "user_ids": ["u-eve"]}, 400),  # not a member here
        ({"min_role": "viewer"}, 400),
        ({"min_role": "member", "user_ids": "u-mem"}, 400),
        ({"min_role": "member", "extra": 1}, 400),
    ]
    for body, status in cases:
        assert _rules(admin, bundle_id, body).status_code == status, body
    assert _rules(member, bundle_id, {"min_role": "owner"}).status_code == 403
    shown = admin.get(f"/api/v1/bundles/{bundle_id}/approvers").get_json()
    assert shown["is_default"]  # nothing refused was written
    assert _rules(admin, "no-such-bundle", {"min_role": "admin"}).status_code == 404


def test_two_of_n_waits_for_a_second_distinct_approver_of_the_same_keys(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    alice = signed_as("u-alice", TENANT, "member")
    bob = signed_as("u-bob", TENANT, "member")
    carol = signed_as("u-carol", TENANT, "member")
    keys = [*KEYS, SeedKey("OTHER", "plain")]
    bundle_id = seed_bundle(TENANT, "production/api", keys)
    rule = {"min_role": None, "user_ids": ["u-alice", "u-bob", "u-carol"], "approvals_required": 2}
    assert _rules(admin, bundle_id, rule).get_json()["approvals_required"] == 2
    cli = Cli.start(api_client)
    first = _approve(alice, cli.id, bundle_id)
    assert first.status_code == 202, first.get_json()
    assert first.get_json()["status"] == "awaiting_approvals"
    assert (first.get_json()["approvals"], first.get_json()["approvals_required"]) == (1, 2)
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is None  # nothing released yet
    again = _approve(alice, cli.id, bundle_id)
    assert again.status_code == 409  # the same person twice is not two approvals
    # A vote for another key set does not add up with alice's.
    other = bob.post(
        f"{REQUESTS}/{cli.id}/encrypt-from-bundle",
        json={"bundle_id": bundle_id, "include_keys": ["API_KEY", "OTHER"]},
    )
    assert other.get_json()["status"] == "awaiting_approvals"
    # A Redis writer adding a vote without the api's MAC adds nothing.
    redis_client.hset(f"req:{cli.id}:votes", "u-forged", f"{bundle_id}|API_KEY#bogus")
    final = _approve(carol, cli.id, bundle_id)
    assert final.status_code == 202 and final.get_json() == {"ok": True}
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is not None
    assert stored.approval.decided_by == "u-carol"
    actions = audit_actions(TENANT)
    assert actions.count(("request.approval_added", cli.id)) == 2
    assert actions.count(("request.approved", cli.id)) == 1


def test_two_of_n_with_a_forged_vote_still_waits(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    alice = signed_as("u-alice", TENANT, "member")
    signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    assert (
        _rules(admin, bundle_id, {"min_role": "member", "approvals_required": 2}).status_code == 200
    )
    cli = Cli.start(api_client)
    redis_client.hset(f"req:{cli.id}:votes", "u-bob", f"{bundle_id}|API_KEY#forged")
    waiting = _approve(alice, cli.id, bundle_id)
    assert waiting.get_json()["status"] == "awaiting_approvals"
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is None


def test_more_approvals_than_eligible_approvers_is_a_400_at_write_time(signed_as: Any) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    signed_as("u-alice", TENANT, "member")
    signed_as("u-view", TENANT, "viewer")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    named = {"min_role": None, "user_ids": ["u-alice"], "approvals_required": 2}
    reply = _rules(admin, bundle_id, named)
    assert reply.status_code == 400 and "only 1 member may approve" in reply.get_json()["message"]
    everyone = {"min_role": "member", "approvals_required": 3}  # admin + alice; viewer never
    assert _rules(admin, bundle_id, everyone).status_code == 400
    assert (
        _rules(admin, bundle_id, {"min_role": "member", "approvals_required": 2}).status_code == 200
    )
    assert (
        _rules(admin, bundle_id, {"min_role": "member", "approvals_required": 0}).status_code == 400
    )


def test_an_approval_whose_audit_fails_does_not_count_and_may_be_made_again(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    alice = signed_as("u-alice", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    two = {"min_role": "member", "approvals_required": 2}
    assert _rules(admin, bundle_id, two).status_code == 200
    cli = Cli.start(api_client)
    assert _approve(alice, cli.id, bundle_id).get_json()["status"] == "awaiting_approvals"
    # The database refuses the final approval's audit event: nothing may be released,
    # and the approver's vote must not stay behind as "already approved".
    with refused_audit("request.approved"):
        failed = _approve(admin, cli.id, bundle_id)
    assert failed.status_code == 503 and failed.get_json()["error"] == "unavailable"
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is None
    again = _approve(admin, cli.id, bundle_id)
    assert again.status_code == 202 and again.get_json() == {"ok": True}
