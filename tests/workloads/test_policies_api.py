"""Workload trust policies through the real api: CRUD, roles, tenants, bad input, audit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from envcat.models import AuditEvent, WorkloadPolicy, db
from tests.support.api import SeedKey, seed_bundle
from tests.support.signed import SignedClient
from tests.workloads.issuer import AUDIENCE

POLICIES = "/api/v1/workload-policies"
ISSUER = "https://token.actions.githubusercontent.com"
RULES = [
    {"claim": "repository", "op": "eq", "value": "acme/api"},
    {"claim": "ref", "op": "glob", "value": "refs/heads/main"},
]


@pytest.fixture
def owner(signed_as: Any) -> SignedClient:
    client: SignedClient = signed_as("u-owner", "t-a", "owner")
    return client


@pytest.fixture
def bundle_id(owner: SignedClient) -> str:
    return seed_bundle("t-a", "production/api", [SeedKey("DATABASE_URL", "x"), SeedKey("API", "y")])


def _body(bundle_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "deploy from main",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "rules": RULES,
        "bundle_id": bundle_id,
        "keys": ["DATABASE_URL"],
        "mode": "automatic",
        **extra,
    }


def _actions(tenant_id: str) -> list[str]:
    db.session.expire_all()
    query = select(AuditEvent.action).where(AuditEvent.tenant_id == tenant_id)
    return list(db.session.execute(query.order_by(AuditEvent.id)).scalars())


def test_create_list_update_delete_round_trip_is_audited(
    owner: SignedClient, bundle_id: str
) -> None:
    created = owner.post(POLICIES, json=_body(bundle_id))
    assert created.status_code == 201, created.get_json()
    policy = created.get_json()
    assert policy["bundle_name"] == "production/api"
    assert policy["rules"] == RULES and policy["keys"] == ["DATABASE_URL"]
    assert owner.get(POLICIES).get_json()["items"] == [policy]
    changed = owner.patch(f"{POLICIES}/{policy['id']}", json={"mode": "approval", "keys": []})
    assert changed.status_code == 200
    assert changed.get_json()["mode"] == "approval" and changed.get_json()["keys"] == []
    assert owner.delete(f"{POLICIES}/{policy['id']}").status_code == 204
    assert owner.get(f"{POLICIES}/{policy['id']}").status_code == 404
    assert _actions("t-a") == [
        "workload_policy.created",
        "workload_policy.updated",
        "workload_policy.deleted",
    ]


def test_members_and_viewers_cannot_read_or_write_policies(
    signed_as: Any, owner: SignedClient, bundle_id: str
) -> None:
    member = signed_as("u-member", "t-a", "member")
    assert member.get(POLICIES).status_code == 403
    assert member.post(POLICIES, json=_body(bundle_id)).status_code == 403
    assert db.session.execute(select(WorkloadPolicy)).first() is None


def test_another_tenants_policy_and_bundle_do_not_exist(
    signed_as: Any, owner: SignedClient, bundle_id: str
) -> None:
    policy = owner.post(POLICIES, json=_body(bundle_id)).get_json()
    other = signed_as("u-other", "t-b", "owner")
    assert other.get(f"{POLICIES}/{policy['id']}").status_code == 404
    assert other.patch(f"{POLICIES}/{policy['id']}", json={"mode": "approval"}).status_code == 404
    assert other.delete(f"{POLICIES}/{policy['id']}").status_code == 404
    assert other.get(POLICIES).get_json() == {"items": []}
    # nor may t-b point a policy of its own at t-a's bundle
    refused = other.post(POLICIES, json=_body(bundle_id))
    assert refused.status_code == 404
    assert refused.get_json()["error"] == "not_found"


def test_a_duplicate_name_is_409_and_leaves_the_first(owner: SignedClient, bundle_id: str) -> None:
    assert owner.post(POLICIES, json=_body(bundle_id)).status_code == 201
    again = owner.post(POLICIES, json=_body(bundle_id, mode="approval"))
    assert again.status_code == 409
    assert again.get_json()["error"] == "conflict"
    [kept] = owner.get(POLICIES).get_json()["items"]
    assert kept["mode"] == "automatic"


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"rules": []}, "rules"),
        ({"rules": [{"claim": "sub", "op": "glob", "value": "*"}]}, "rules"),
        ({"rules": [{"claim": "sub", "op": "regex", "value": "x"}]}, "rules"),
        ({"issuer": "not a url"}, "issuer"),
        ({"issuer": "https://issuer.test/?x=1"}, "issuer"),
        ({"mode": "sometimes"}, "mode"),
        ({"keys": ["not a name"]}, "keys"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    owner: SignedClient, bundle_id: str, change: dict[str, Any], loc: str
) -> None:
    response = owner.post(POLICIES, json=_body(bundle_id, **change))
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert body["details"][0]["loc"][0] == loc
    assert db.session.execute(select(WorkloadPolicy)).first() is None


def test_http_issuers_and_keys_outside_the_bundle_are_refused(
    owner: SignedClient, bundle_id: str
) -> None:
    plain = owner.post(POLICIES, json=_body(bundle_id, issuer="http://issuer.example.test"))
    assert plain.status_code == 400
    assert "https" in plain.get_json()["message"]
    missing = owner.post(POLICIES, json=_body(bundle_id, keys=["NOT_THERE"]))
    assert missing.status_code == 400
    assert "NOT_THERE" in missing.get_json()["message"]
    assert db.session.execute(select(WorkloadPolicy)).first() is None


def test_a_failed_update_leaves_the_policy_as_it_was(owner: SignedClient, bundle_id: str) -> None:
    policy = owner.post(POLICIES, json=_body(bundle_id)).get_json()
    refused = owner.patch(f"{POLICIES}/{policy['id']}", json={"keys": ["NOT_THERE"]})
    assert refused.status_code == 400
    assert owner.get(f"{POLICIES}/{policy['id']}").get_json() == policy
    assert owner.patch(f"{POLICIES}/{policy['id']}", json={"mode": None}).status_code == 400
