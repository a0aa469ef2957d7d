"""Service tokens through the real api and a real worker (issue #16).

Shown once, stored as prefix + SHA-256, scoped to one bundle's keys, expiring,
revocable, rate-limited, every use audited; each refusal is replayed as its attack.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import AuditEvent, ServiceToken, db, utcnow
from envcat.services.access_requests import delivery
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

TENANT = "t-acme"
TOKENS = "/api/v1/service-tokens"
CANARY = "canary-token-db-41c"
KEYS = [SeedKey("DATABASE_URL", CANARY), SeedKey("API_KEY", "k"), SeedKey("DEBUG", "0")]


@pytest.fixture
def owner(signed_as: Any) -> SignedClient:
    client: SignedClient = signed_as("u-owner", TENANT, "owner")
    return client


@pytest.fixture
def bundle_id(owner: SignedClient) -> str:
    return seed_bundle(TENANT, "production/api", KEYS)


def _token(owner: SignedClient, bundle_id: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "legacy ci", "bundle_id": bundle_id, "keys": ["DATABASE_URL"], **extra}
    response = owner.post(TOKENS, json=body)
    assert response.status_code == 201, response.get_json()
    created: dict[str, Any] = response.get_json()
    return created


def _ask(client: FlaskClient, token: str, workspace: str = TENANT, **hints: Any) -> Any:
    ensure_workspace(workspace)
    private_key = generate_keypair()
    body = {"client_pubkey": encode_public_key(private_key), "workspace": workspace, **hints}
    response = client.post(REQUESTS, json=body, headers={"Authorization": f"Bearer {token}"})
    return response, private_key


def _events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    query = select(AuditEvent).where(AuditEvent.action == action)
    return list(db.session.execute(query).scalars())


def test_a_token_is_shown_once_and_stored_as_prefix_and_hash(
    owner: SignedClient, bundle_id: str
) -> None:
    created = _token(owner, bundle_id)
    token = created["token"]
    assert token.startswith(f"ect_{created['prefix']}_")
    [listed] = owner.get(TOKENS).get_json()["items"]
    assert "token" not in listed and listed["prefix"] == created["prefix"]
    row = db.session.execute(select(ServiceToken)).scalar_one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = repr([getattr(row, column.name) for column in ServiceToken.__table__.columns])
    assert token not in stored and token.split("_", 2)[2] not in stored
    [event] = _events("service_token.created")
    assert token not in repr(event.details)


def test_a_token_delivers_its_keys_with_no_approval(
    api_app: Flask,
    api_client: FlaskClient,
    owner: SignedClient,
    bundle_id: str,
    celery_worker: object,
) -> None:
    created = _token(owner, bundle_id)
    response, private_key = _ask(api_client, created["token"], bundle="production/api")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["workload_mode"] == "automatic"
    cli = Cli(api_client, private_key, body["id"], body["poll_token"], body)
    final = wait_until_final(cli)
    envelope = open_verified(private_key, final.get_json()["ciphertext_base64"])
    assert dict(envelope.keys) == {"DATABASE_URL": CANARY}
    assert envelope.approver_email == f"service-token:legacy ci ({created['prefix']})"
    [used] = _events("service_token.used")
    assert used.actor == envelope.approver_email and used.details["keys"] == ["DATABASE_URL"]
    [approved] = _events("request.approved")
    assert approved.actor == envelope.approver_email
    assert owner.get(TOKENS).get_json()["items"][0]["last_used_at"] is not None


def test_revoked_expired_foreign_and_forged_tokens_get_the_same_401(
    api_client: FlaskClient,
    owner: SignedClient,
    signed_as: Any,
    bundle_id: str,
    redis_client: redis.Redis,
) -> None:
    revoked = _token(owner, bundle_id, name="revoked")
    assert owner.delete(f"{TOKENS}/{revoked['id']}").status_code == 204
    expired = _token(owner, bundle_id, name="expired")
    row = db.session.get(ServiceToken, expired["id"])
    assert row is not None
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    other = signed_as("u-other", "t-other", "owner")
    foreign = _token(other, seed_bundle("t-other", "production/api", KEYS))
    good = _token(owner, bundle_id, name="good")
    forged = good["token"][:-4] + ("AAAA" if not good["token"].endswith("AAAA") else "BBBB")
    answers = []
    for token in (revoked["token"], expired["token"], foreign["token"], forged, "ect_nope"):
        response, _ = _ask(api_client, token)
        answers.append((response.status_code, response.get_json()))
    assert {status for status, _ in answers} == {401}
    assert len({body["message"] for _, body in answers}) == 1  # nothing tells them apart
    assert list(redis_client.scan_iter(match="req:*")) == []
    assert len(_events("service_token.revoked")) == 1


def test_another_bundle_or_more_keys_are_refused(
    api_client: FlaskClient, owner: SignedClient, bundle_id: str
) -> None:
    token = _token(owner, bundle_id)["token"]
    seed_bundle(TENANT, "staging/api", [SeedKey("STAGING_URL", "s")])
    other, _ = _ask(api_client, token, bundle="staging/api")
    assert other.status_code == 403
    more, _ = _ask(api_client, token, template_keys=["API_KEY"])
    assert more.status_code == 403


def test_a_token_is_rate_limited(
    api_app: Flask, api_client: FlaskClient, owner: SignedClient, bundle_id: str
) -> None:
    runtime = api_app.extensions["envcat"]
    object.__setattr__(
        runtime, "settings", runtime.settings.model_copy(update={"service_token_rate_limit": 2})
    )
    token = _token(owner, bundle_id)["token"]
    statuses = [_ask(api_client, token)[0].status_code for _ in range(3)]
    assert statuses == [201, 201, 429]


def test_a_token_revoked_before_the_worker_runs_releases_nothing(
    api_app: Flask, api_client: FlaskClient, owner: SignedClient, bundle_id: str
) -> None:
    created = _token(owner, bundle_id)
    response, private_key = _ask(api_client, created["token"])
    assert response.status_code == 201
    assert owner.delete(f"{TOKENS}/{created['id']}").status_code == 204
    body = response.get_json()
    mac = redis.Redis.from_url(
        api_app.extensions["envcat"].settings.redis_url, decode_responses=True
    ).hget(f"req:{body['id']}", "am")
    assert delivery.encrypt_from_bundle(body["id"], str(mac)) is False
    final = Cli(api_client, private_key, body["id"], body["poll_token"], body).wait().get_json()
    assert final["status"] == "failed" and "revoked" in final["message"]


def test_lifetime_roles_and_tenants_are_enforced(
    owner: SignedClient, signed_as: Any, bundle_id: str
) -> None:
    too_long = owner.post(TOKENS, json={"name": "x", "bundle_id": bundle_id, "expires_in_days": 91})
    assert too_long.status_code == 400 and "90 days" in too_long.get_json()["message"]
    member = signed_as("u-member", TENANT, "member")
    assert member.post(TOKENS, json={"name": "x", "bundle_id": bundle_id}).status_code == 403
    assert member.get(TOKENS).status_code == 403
    created = _token(owner, bundle_id)
    other = signed_as("u-other", "t-other", "owner")
    assert other.delete(f"{TOKENS}/{created['id']}").status_code == 404
    assert other.post(TOKENS, json={"name": "x", "bundle_id": bundle_id}).status_code == 404
