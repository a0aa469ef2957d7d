"""Requests carrying a workload's ID token, through the real api (issue #16).

A loopback issuer signs GitHub-shaped tokens; the api verifies them against its real
JWKS, finds the named workspace's trust policy and, for an automatic policy, approves
through the same path as a person, so a real worker seals the signed envelope. Every
refusal is replayed as the attack it stops, and nothing is stored or delivered.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import AuditEvent, db
from envcat.services import workload_access
from tests.api.test_decision_reads import recorded
from tests.support.api import (
    REQUESTS,
    Cli,
    SeedKey,
    ensure_workspace,
    seed_bundle,
    wait_until_final,
)
from tests.support.envelopes import open_verified
from tests.support.signed import SignedClient
from tests.workloads.issuer import AUDIENCE, REF, LoopbackIssuer, forge

TENANT = "t-acme"
BUNDLE = "production/api"
CANARY = "canary-db-url-7f3a"
KEYS = [SeedKey("DATABASE_URL", CANARY), SeedKey("API_KEY", "sk-canary-91"), SeedKey("DEBUG", "0")]


@pytest.fixture
def owner(signed_as: Any) -> SignedClient:
    client: SignedClient = signed_as("u-owner", TENANT, "owner")
    return client


def _policy(
    owner: SignedClient, issuer: LoopbackIssuer, bundle_id: str, **extra: Any
) -> dict[str, Any]:
    body = {
        "name": "deploy from main",
        "issuer": issuer.url,
        "audience": AUDIENCE,
        "rules": [
            {"claim": "repository", "op": "eq", "value": "acme/api"},
            {"claim": "ref", "op": "glob", "value": "refs/heads/main"},
            {"claim": "environment", "op": "eq", "value": "production"},
        ],
        "bundle_id": bundle_id,
        "keys": ["DATABASE_URL", "API_KEY"],
        "mode": "automatic",
        **extra,
    }
    response = owner.post("/api/v1/workload-policies", json=body)
    assert response.status_code == 201, response.get_json()
    policy: dict[str, Any] = response.get_json()
    return policy


def _ask(client: FlaskClient, token: str, workspace: str = TENANT, **hints: Any) -> Any:
    ensure_workspace(workspace)
    private_key = generate_keypair()
    body = {
        "client_pubkey": encode_public_key(private_key),
        "workspace": workspace,
        "id_token": token,
        **hints,
    }
    response = client.post(REQUESTS, json=body)
    return response, private_key


def _pending_requests(r: redis.Redis) -> list[Any]:
    return list(r.scan_iter(match="req:*"))


def _events(tenant_id: str) -> list[AuditEvent]:
    db.session.expire_all()
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.id)
    return list(db.session.execute(query).scalars())


def test_a_matching_token_is_delivered_with_no_approval(
    api_app: Flask,
    api_client: FlaskClient,
    owner: SignedClient,
    issuer: LoopbackIssuer,
    celery_worker: object,
    redis_client: redis.Redis,
) -> None:
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    policy = _policy(owner, issuer, bundle_id)
    token = issuer.mint()
    response, private_key = _ask(api_client, token, bundle=BUNDLE)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    label = f"workload:github:acme/api@{REF} run 123"
    assert created["workload_mode"] == "automatic" and created["workload"] == label
    cli = Cli(api_client, private_key, created["id"], created["poll_token"], created)
    final = wait_until_final(cli)
    assert final.status_code == 200 and final.get_json()["status"] == "ready"
    envelope = open_verified(private_key, final.get_json()["ciphertext_base64"])
    assert dict(envelope.keys) == {"DATABASE_URL": CANARY, "API_KEY": "sk-canary-91"}
    assert envelope.approver_id == workload_access.APPROVER_PREFIX + policy["id"]
    assert envelope.approver_email == label
    assert envelope.bundle_name == BUNDLE
    events = _events(TENANT)
    approved = next(e for e in events if e.action == "request.approved")
    assert approved.actor == label
    assert approved.details["policy"] == "deploy from main"
    assert approved.details["keys"] == ["DATABASE_URL", "API_KEY"]
    requested = next(e for e in events if e.action == "workload.requested")
    assert requested.actor == label and requested.details["mode"] == "automatic"
    # the token is never stored: not in the audit log, not in Redis
    assert token not in repr([(e.actor, e.details) for e in events])
    assert not any(token in repr(redis_client.dump(key)) for key in redis_client.scan_iter())


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"repository": "evil/api"}, 403, "workload_not_allowed"),
        ({"ref": "refs/heads/feature"}, 403, "workload_not_allowed"),
        ({"environment": None}, 403, "workload_not_allowed"),
        ({"aud": "https://another.test"}, 401, "invalid_id_token"),
        ({"exp": 1_000_000}, 401, "invalid_id_token"),
    ],
)
def test_wrong_claims_are_refused_and_nothing_is_stored(
    api_client: FlaskClient,
    owner: SignedClient,
    issuer: LoopbackIssuer,
    redis_client: redis.Redis,
    overrides: dict[str, Any],
    status: int,
    error: str,
) -> None:
    _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS))
    response, _ = _ask(api_client, issuer.mint(**overrides), bundle=BUNDLE)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"] == error
    assert _pending_requests(redis_client) == []
    assert CANARY not in response.get_data(as_text=True)


def test_a_token_from_an_issuer_no_policy_names_is_refused_without_a_fetch(
    api_client: FlaskClient, owner: SignedClient, issuer: LoopbackIssuer
) -> None:
    _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS))
    stranger = LoopbackIssuer().start()
    try:
        response, _ = _ask(api_client, stranger.mint(aud=AUDIENCE), bundle=BUNDLE)
    finally:
        stranger.stop()
    assert response.status_code == 403
    assert response.get_json()["error"] == "workload_not_allowed"
    assert stranger.jwks_hits == 0  # only issuers the workspace's policies name are fetched


def test_a_token_is_good_for_one_request(
    api_client: FlaskClient, owner: SignedClient, issuer: LoopbackIssuer
) -> None:
    _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS), mode="approval")
    token = issuer.mint()
    first, _ = _ask(api_client, token, bundle=BUNDLE)
    assert first.status_code == 201
    replay, _ = _ask(api_client, token, bundle=BUNDLE)
    assert replay.status_code == 401
    assert "already used" in replay.get_json()["message"]


@pytest.mark.parametrize("kind", ["none", "hs256-public-key"])
def test_unsigned_and_alg_confused_tokens_are_refused(
    api_client: FlaskClient, owner: SignedClient, issuer: LoopbackIssuer, kind: str
) -> None:
    _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS))
    claims = issuer.claims()
    if kind == "none":
        token = forge({"alg": "none", "kid": issuer.rsa_kid}, claims)
    else:
        token = forge({"alg": "HS256", "kid": issuer.rsa_kid}, claims, issuer.public_pem())
    response, _ = _ask(api_client, token, bundle=BUNDLE)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_id_token"


def test_a_token_matching_another_tenants_policy_gets_nothing_here(
    api_client: FlaskClient,
    signed_as: Any,
    owner: SignedClient,
    issuer: LoopbackIssuer,
    redis_client: redis.Redis,
) -> None:
    # t-acme trusts only acme/api; t-evil trusts evil/api with a policy of its own
    _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS))
    evil = signed_as("u-evil", "t-evil", "owner")
    _policy(
        evil,
        issuer,
        seed_bundle("t-evil", BUNDLE, [SeedKey("X", "y")]),
        rules=[{"claim": "repository", "op": "eq", "value": "evil/api"}],
        keys=[],
    )
    response, _ = _ask(api_client, issuer.mint(repository="evil/api"), bundle=BUNDLE)
    assert response.status_code == 403
    body = response.get_json()
    assert body["error"] == "workload_not_allowed"
    assert "t-evil" not in body["message"] and "evil/api@" in body["message"]
    assert _pending_requests(redis_client) == []


def test_keys_beyond_the_policy_are_refused(
    api_client: FlaskClient, owner: SignedClient, issuer: LoopbackIssuer
) -> None:
    _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS))
    response, _ = _ask(api_client, issuer.mint(), bundle=BUNDLE, template_keys=["DEBUG"])
    assert response.status_code == 403
    assert "keys asked for" in response.get_json()["message"]


def test_an_unreachable_issuer_is_503_with_retry_after_never_500(
    api_client: FlaskClient, owner: SignedClient, issuer: LoopbackIssuer
) -> None:
    _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS))
    token = issuer.mint()
    issuer.stop()
    response, _ = _ask(api_client, token, bundle=BUNDLE)
    assert response.status_code == 503
    assert response.get_json()["error"] == "issuer_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def test_an_approval_policy_waits_for_a_person_and_names_the_workload(
    api_client: FlaskClient,
    owner: SignedClient,
    issuer: LoopbackIssuer,
    broker_url: str,
) -> None:
    _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS), mode="approval")
    broker = redis.Redis.from_url(broker_url)
    queued = broker.llen("approvals")  # the broker is shared by this process's tests
    response, _ = _ask(api_client, issuer.mint(), bundle=BUNDLE)
    assert response.status_code == 201
    created = response.get_json()
    assert created["workload_mode"] == "approval"
    shown = api_client.get(f"{REQUESTS}/{created['id']}/context").get_json()
    assert shown["status"] == "pending"
    assert shown["workload"].startswith("workload:github:acme/api@refs/heads/main run 123")
    assert "policy deploy from main" in shown["workload"]
    assert shown["template_keys"] == ["DATABASE_URL", "API_KEY"]
    assert broker.llen("approvals") == queued  # nothing was queued for a worker


def test_a_cli_cannot_claim_to_be_a_workload_without_a_token(
    api_client: FlaskClient,
) -> None:
    cli = Cli.start(api_client, context={"workload": "workload:github:acme/api@main"})
    shown = api_client.get(f"{REQUESTS}/{cli.id}/context").get_json()
    assert shown["workload"] is None


def test_a_policy_deleted_before_the_worker_runs_releases_nothing(
    api_app: Flask,
    api_client: FlaskClient,
    owner: SignedClient,
    issuer: LoopbackIssuer,
) -> None:
    policy = _policy(owner, issuer, seed_bundle(TENANT, BUNDLE, KEYS))
    response, private_key = _ask(api_client, issuer.mint(), bundle=BUNDLE)
    assert response.status_code == 201
    assert owner.delete(f"/api/v1/workload-policies/{policy['id']}").status_code == 204
    from envcat.services.access_requests import delivery

    created = response.get_json()
    stored_mac = str(
        redis.Redis.from_url(
            api_app.extensions["envcat"].settings.redis_url, decode_responses=True
        ).hget(f"req:{created['id']}", "am")
    )
    assert delivery.encrypt_from_bundle(created["id"], stored_mac) is False
    cli = Cli(api_client, private_key, created["id"], created["poll_token"], created)
    final = cli.wait().get_json()
    assert final["status"] == "failed"
    assert "trust policy was deleted" in final["message"]


def test_the_issuer_allow_list_limits_what_policies_may_name(
    api_app: Flask, owner: SignedClient, issuer: LoopbackIssuer
) -> None:
    runtime = api_app.extensions["envcat"]
    limited = runtime.settings.model_copy(update={"oidc_issuers": "https://token.example.test"})
    object.__setattr__(runtime, "settings", limited)
    response = owner.post(
        "/api/v1/workload-policies",
        json={
            "name": "p",
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "rules": [{"claim": "sub", "op": "eq", "value": "x"}],
            "bundle_id": seed_bundle(TENANT, BUNDLE, KEYS),
        },
    )
    assert response.status_code == 400
    assert "OIDC_ISSUERS" in response.get_json()["message"]


def test_an_automatic_policy_is_not_held_by_the_bundles_human_approver_rules(
    api_client: FlaskClient,
    owner: SignedClient,
    signed_as: Any,
    issuer: LoopbackIssuer,
    celery_worker: object,
) -> None:
    """A bundle needing two named human approvers still delivers to its automatic policy.

    The trust policy is the admins' standing approval (docs/ci.md); the human rule
    (issue #17) keeps holding people: one approver alone still waits for a second.
    """
    signed_as("u-second", TENANT, "admin")
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    rule = {"min_role": None, "user_ids": ["u-owner", "u-second"], "approvals_required": 2}
    assert owner.call("PUT", f"/api/v1/bundles/{bundle_id}/approvers", rule).status_code == 200
    _policy(owner, issuer, bundle_id)
    response, private_key = _ask(api_client, issuer.mint(), bundle=BUNDLE)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    cli = Cli(api_client, private_key, created["id"], created["poll_token"], created)
    assert wait_until_final(cli).get_json()["status"] == "ready"

    person = Cli.start(api_client)
    vote = owner.post(
        f"{REQUESTS}/{person.id}/encrypt-from-bundle",
        json={"bundle_id": bundle_id, "include_keys": ["DATABASE_URL", "API_KEY"]},
    )
    assert vote.status_code == 202
    assert vote.get_json()["status"] == "awaiting_approvals"


def test_an_automatic_delivery_reads_no_person_rules(
    api_client: FlaskClient, owner: SignedClient, issuer: LoopbackIssuer
) -> None:
    """A trust policy is a standing approval: the typed phrase, passkey, approver and
    requester rules a person's approval reads (in one statement) cost it nothing."""
    bundle_id = seed_bundle(TENANT, BUNDLE, KEYS)
    _policy(owner, issuer, bundle_id)
    token = issuer.mint()
    with recorded() as (statements, _):
        response, _ = _ask(api_client, token, bundle=BUNDLE)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["workload_mode"] == "automatic"  # approved in this call
    assert statements  # the approval's own reads and audit were recorded
    assert not [s for s in statements if "workspace_policies" in s and "bundle_approvers" in s]
