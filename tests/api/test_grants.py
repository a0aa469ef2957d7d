"""Device grants at the api (issue #17): the policy's bounds, who may set and revoke, k-of-n.

In-process api with real Redis and SQLite; the end-to-end attacks with real CLI
processes are in tests/security/test_device_grants.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from nacl.signing import SigningKey

from envcat.cli.device import signed_block
from envcat.core.device import fingerprint
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.models import utcnow
from envcat.services import grants
from tests.support.api import REQUESTS, SeedKey, audit_actions, ensure_workspace
from tests.support.api import seed_bundle as seed
from tests.support.settings import make_settings

TENANT = "t-acme"
KEYS = [SeedKey("API_KEY", "sk-canary-grants"), SeedKey("OTHER", "plain")]


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """The grant store on both database backends."""
    return make_settings(database_url, redis_url, broker_url)


def _signed_request(client: FlaskClient, device: SigningKey, **hints: Any) -> dict[str, Any]:
    ensure_workspace(TENANT)
    body: dict[str, Any] = {
        "client_pubkey": encode_public_key(generate_keypair()),
        "workspace": TENANT,
        "bundle": "production/api",
        **hints,
    }
    body["device"] = signed_block(device, body)
    reply = client.post(REQUESTS, json=body)
    assert reply.status_code == 201, reply.get_json()
    data: dict[str, Any] = reply.get_json()
    return data


def _approve(signed: Any, request_id: str, bundle_id: str, hours: int | None) -> Any:
    body: dict[str, Any] = {"bundle_id": bundle_id, "include_keys": ["API_KEY"]}
    if hours is not None:
        body["grant_hours"] = hours
    return signed.post(f"{REQUESTS}/{request_id}/encrypt-from-bundle", json=body)


def test_the_grant_policy_is_bounded_and_set_by_admins_only(
    api_client: FlaskClient, signed_as: Any
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    member = signed_as("u-mem", TENANT, "member")
    bundle_id = seed(TENANT, "production/api", KEYS)
    path = f"/api/v1/bundles/{bundle_id}/grant-policy"
    assert admin.get(path).get_json() == {"max_hours": 0}
    assert member.call("PUT", path, {"max_hours": 4}).status_code == 403
    for bad in (25, -1, "4", True):
        reply = admin.call("PUT", path, {"max_hours": bad})
        assert reply.status_code == 400, bad
        assert reply.get_json()["error"] == "validation_error"
    assert admin.get(path).get_json() == {"max_hours": 0}  # a refused write changed nothing
    assert admin.call("PUT", path, {"max_hours": 4}).get_json() == {"max_hours": 4}
    stranger = signed_as("u-out", "t-other", "owner")
    assert stranger.get(path).status_code == 404
    assert stranger.call("PUT", path, {"max_hours": 4}).status_code == 404

    device = SigningKey.generate()
    made = _signed_request(api_client, device)
    too_long = _approve(member, made["id"], bundle_id, 5)
    assert too_long.status_code == 400 and "at most 4 hours" in too_long.get_json()["message"]
    unsigned = api_client.post(
        REQUESTS, json={"client_pubkey": encode_public_key(generate_keypair()), "workspace": TENANT}
    ).get_json()
    refused = _approve(member, unsigned["id"], bundle_id, 2)
    assert (
        refused.status_code == 400 and "not signed by a device key" in refused.get_json()["message"]
    )
    assert ("request.approved", unsigned["id"]) not in audit_actions(TENANT)


def test_the_final_vote_of_k_of_n_makes_the_grant_and_records_every_voter(
    api_client: FlaskClient, signed_as: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    alice = signed_as("u-alice", TENANT, "member")
    bob = signed_as("u-bob", TENANT, "member")
    bundle_id = seed(TENANT, "production/api", KEYS)
    rule = {"min_role": None, "user_ids": ["u-alice", "u-bob"], "approvals_required": 2}
    assert admin.call("PUT", f"/api/v1/bundles/{bundle_id}/approvers", rule).status_code == 200
    admin.call("PUT", f"/api/v1/bundles/{bundle_id}/grant-policy", {"max_hours": 8})
    device = SigningKey.generate()
    made = _signed_request(api_client, device, template_keys=["API_KEY"])

    first = _approve(alice, made["id"], bundle_id, 8)  # a tick on an earlier vote: nothing yet
    assert first.get_json()["status"] == "awaiting_approvals"
    assert admin.get("/api/v1/grants").get_json()["items"] == []
    final = _approve(bob, made["id"], bundle_id, 3)
    assert final.status_code == 202, final.get_json()
    (grant,) = admin.get(f"/api/v1/grants?bundle_id={bundle_id}").get_json()["items"]
    assert grant["approved_by"] == "u-bob" and grant["approvers"] == ["u-alice", "u-bob"]
    assert grant["keys"] == ["API_KEY"] and grant["device"] == fingerprint(bytes(device.verify_key))

    # the device's next request for those keys skips both approvers; others' do not
    again = _signed_request(api_client, device, template_keys=["API_KEY"])
    assert again["grant_id"] == grant["id"] and again["workload_mode"] == "automatic"
    other = _signed_request(api_client, SigningKey.generate(), template_keys=["API_KEY"])
    assert "grant_id" not in other
    assert ("request.granted", again["id"]) in audit_actions(TENANT)
    day = utcnow().date()
    period = f"since={day - timedelta(days=1)}&until={day + timedelta(days=1)}"
    report = admin.get(f"/api/v1/audit/report?{period}").get_json()
    released = {r["request_id"]: r for r in report["releases"]}
    assert released[again["id"]]["keys"] == ["API_KEY"]  # the auditor sees grant releases too

    # past its expiry (an injected clock, no sleeping) it applies no more
    later = utcnow() + timedelta(hours=3, seconds=1)
    monkeypatch.setattr(grants, "now", lambda: later)
    assert "grant_id" not in _signed_request(api_client, device, template_keys=["API_KEY"])
    listed = admin.get("/api/v1/grants").get_json()["items"]
    assert listed[0]["is_active"] is False
    monkeypatch.undo()

    # any member may revoke (another workspace's member gets 404); then it waits again
    stranger = signed_as("u-out", "t-other", "owner")
    assert stranger.delete(f"/api/v1/grants/{grant['id']}").status_code == 404
    assert alice.delete(f"/api/v1/grants/{grant['id']}").status_code == 204
    assert alice.delete(f"/api/v1/grants/{grant['id']}").status_code == 204  # harmless twice
    assert actions_of(TENANT).count("grant.revoked") == 1
    after = _signed_request(api_client, device, template_keys=["API_KEY"])
    assert "grant_id" not in after


def actions_of(tenant_id: str) -> list[str]:
    return [action for action, _ in audit_actions(tenant_id)]
