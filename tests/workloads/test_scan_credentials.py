"""Who may ask the scan oracle besides a scan token (issue #19): a signed-in terminal's
user token (members and above) and a CI workload whose trust policy grants `scan`.

Each refusal is replayed as its attack: a viewer confirming guesses of values, another
workspace's user token, a policy without the scan permission, another workspace's
policy, and a spent ID token used again.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from envcat.models import AuditEvent, Tenant, db
from envcat.services import user_tokens
from tests.support.signed import SignedClient, add_member
from tests.workloads.issuer import AUDIENCE, REPOSITORY, LoopbackIssuer

TENANT, RIVAL = "t-scan-a", "t-scan-b"
VALUE = "canary-scan-credential-5d1e"
MATCHES, LEAKS = "/api/v1/scan/matches", "/api/v1/scan/leaks"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _slug(tenant_id: str) -> str:
    tenant = db.session.get(Tenant, tenant_id)
    assert tenant is not None
    return tenant.slug


def _ask(client: FlaskClient, bearer: str, tenant_id: str = TENANT) -> Any:
    body = {"workspace": _slug(tenant_id), "hashes": [sha(VALUE), sha("not-a-value-at-all")]}
    return client.post(MATCHES, json=body, headers={"Authorization": f"Bearer {bearer}"})


@pytest.fixture
def owner(signed_as: Any) -> SignedClient:
    client: SignedClient = signed_as("u-scan-owner", TENANT, "owner")
    bundle = client.post("/api/v1/bundles", json={"name": "production/api"}).get_json()
    added = client.post(
        f"/api/v1/bundles/{bundle['id']}/keys", json={"name": "DATABASE_URL", "value": VALUE}
    )
    assert added.status_code == 201
    return client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no column of its own
def test_a_members_terminal_scans_its_workspace_and_a_viewer_or_stranger_learns_nothing(
    api_client: FlaskClient, owner: SignedClient
) -> None:
    add_member("u-member", TENANT, "member")
    add_member("u-viewer", TENANT, "viewer")
    add_member("u-rival", RIVAL, "member")
    member, _ = user_tokens.issue(TENANT, "u-member", "laptop")
    viewer, _ = user_tokens.issue(TENANT, "u-viewer", "laptop")
    rival, _ = user_tokens.issue(RIVAL, "u-rival", "laptop")

    found = _ask(api_client, member)
    assert found.status_code == 200
    assert found.get_json()["matches"] == [{"sha256": sha(VALUE), "keys": ["DATABASE_URL"]}]
    refused = _ask(api_client, viewer)  # may not reveal values, so may not confirm them
    assert refused.status_code == 403 and "member role" in refused.get_json()["message"]
    assert _ask(api_client, rival).status_code == 401  # another workspace's terminal
    assert _ask(api_client, rival, RIVAL).get_json()["matches"] == []  # its own: no such value

    leak = {"sha256": sha(VALUE), "path": "app/settings.py", "line": 3}
    body = {"workspace": _slug(TENANT), "leaks": [leak]}
    reported = api_client.post(LEAKS, json=body, headers={"Authorization": f"Bearer {member}"})
    assert reported.status_code == 200 and reported.get_json()["keys"] == ["DATABASE_URL"]
    actors = db.session.execute(
        select(AuditEvent.actor, AuditEvent.action).where(AuditEvent.tenant_id == TENANT)
    ).all()
    assert ("u-member", "scan.checked") in actors and ("u-member", "secret.leaked") in actors


def _policy(client: SignedClient, issuer: LoopbackIssuer, name: str, *, scan: bool) -> Any:
    bundle_id = client.get("/api/v1/bundles").get_json()["bundles"][0]["id"]
    body = {
        "name": name,
        "issuer": issuer.url,
        "audience": AUDIENCE,
        "rules": [{"claim": "repository", "op": "eq", "value": REPOSITORY}],
        "bundle_id": bundle_id,
        "scan": scan,
    }
    created = client.post("/api/v1/workload-policies", json=body)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def test_a_workload_scans_only_with_a_scan_policy_and_each_token_once(
    api_client: FlaskClient, owner: SignedClient, signed_as: Any, issuer: LoopbackIssuer
) -> None:
    plain = _policy(owner, issuer, "deploy", scan=False)
    assert plain["scan"] is False
    refused = _ask(api_client, issuer.mint())
    assert refused.status_code == 403 and refused.get_json()["error"] == "workload_not_allowed"

    # Another workspace's scanning policy for the same repository does nothing here.
    rival: SignedClient = signed_as("u-rival-owner", RIVAL, "owner")
    rival.post("/api/v1/bundles", json={"name": "rival"})
    _policy(rival, issuer, "rival scan", scan=True)
    assert _ask(api_client, issuer.mint()).status_code == 403

    updated = owner.patch(f"/api/v1/workload-policies/{plain['id']}", json={"scan": True})
    assert updated.status_code == 200 and updated.get_json()["scan"] is True
    token = issuer.mint()
    found = _ask(api_client, token)
    assert found.status_code == 200
    assert found.get_json()["matches"] == [{"sha256": sha(VALUE), "keys": ["DATABASE_URL"]}]
    replayed = _ask(api_client, token)  # a spent token is spent, for scanning too
    assert replayed.status_code == 401 and "already used" in replayed.get_json()["message"]
    other_repo = _ask(api_client, issuer.mint(repository="mallory/fork"))
    assert other_repo.status_code == 403

    actors = db.session.execute(
        select(AuditEvent.actor).where(
            AuditEvent.tenant_id == TENANT, AuditEvent.action == "scan.checked"
        )
    ).scalars()
    assert list(actors) == [f"workload:github:{REPOSITORY}@refs/heads/main run 123"]
