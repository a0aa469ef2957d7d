"""The scan oracle's guards (issue #19): credential, batch cap, rate limit, forged alerts.

The endpoints answer which SHA-256 hashes are the workspace's values, so each guard
is replayed as the abuse it stops.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.models import AuditEvent, Tenant, db
from tests.support.settings import make_settings
from tests.support.signed import SignedClient

TENANT = "t-scan"
VALUE = "canary-scan-api-value-81e0"
MATCHES, LEAKS = "/api/v1/scan/matches", "/api/v1/scan/leaks"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(sqlite_url, redis_url, broker_url, scan_batch_max=3, scan_rate_limit=4)


@pytest.fixture
def token(signed_as: Any) -> str:
    owner: SignedClient = signed_as("u-owner", TENANT, "owner")
    bundle = owner.post("/api/v1/bundles", json={"name": "app"}).get_json()
    added = owner.post(f"/api/v1/bundles/{bundle['id']}/keys", json={"name": "DB", "value": VALUE})
    assert added.status_code == 201
    body = {"name": "scan", "bundle_id": bundle["id"], "scopes": ["scan"]}
    created: dict[str, Any] = owner.post("/api/v1/service-tokens", json=body).get_json()
    return str(created["token"])


def _slug() -> str:
    tenant = db.session.get(Tenant, TENANT)
    assert tenant is not None
    return tenant.slug


def _post(client: FlaskClient, path: str, body: dict[str, Any], token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(path, json=body, headers=headers)


def _actions() -> list[str]:
    db.session.expire_all()
    return list(db.session.execute(select(AuditEvent.action)).scalars())


def test_batches_are_capped_and_bad_hashes_refused_without_echo(
    api_client: FlaskClient, token: str
) -> None:
    before = _actions()
    body = {"workspace": _slug(), "hashes": [sha(str(n)) for n in range(4)]}
    too_many = _post(api_client, MATCHES, body, token)
    assert too_many.status_code == 400 and "at most 3" in too_many.get_json()["message"]
    malformed = _post(api_client, MATCHES, {"workspace": _slug(), "hashes": [VALUE]}, token)
    assert malformed.status_code == 400 and malformed.get_json()["error"] == "validation_error"
    assert VALUE not in malformed.get_data(as_text=True)
    anonymous = _post(api_client, MATCHES, {"workspace": _slug(), "hashes": [sha(VALUE)]}, None)
    assert anonymous.status_code == 401
    assert _actions() == before  # nothing answered, nothing audited


def test_each_credential_is_rate_limited_and_each_call_audited_with_counts(
    api_client: FlaskClient, token: str
) -> None:
    body = {"workspace": _slug(), "hashes": [sha(VALUE), sha("not-a-value-of-ours")]}
    for _ in range(4):
        reply = _post(api_client, MATCHES, body, token)
        assert reply.get_json() == {"matches": [{"sha256": sha(VALUE), "keys": ["DB"]}]}
    limited = _post(api_client, MATCHES, body, token)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "60"
    events = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "scan.checked")
    ).scalars()
    assert [e.details for e in events] == [{"hashes": 2, "matched": 1}] * 4


def test_a_forged_leak_report_raises_no_alert_and_a_real_one_alerts_once(
    api_client: FlaskClient, token: str
) -> None:
    forged = {"sha256": sha("anything"), "path": "x.py", "line": 1}
    reply = _post(api_client, LEAKS, {"workspace": _slug(), "leaks": [forged]}, token)
    assert reply.get_json() == {"alerted": 0, "keys": []}
    real = {"sha256": sha(VALUE), "path": "app/.env", "line": 3, "commit": "ab" * 20}
    first = _post(api_client, LEAKS, {"workspace": _slug(), "leaks": [real]}, token)
    again = _post(api_client, LEAKS, {"workspace": _slug(), "leaks": [real]}, token)
    assert first.get_json() == {"alerted": 1, "keys": ["DB"]}
    assert again.get_json() == {"alerted": 0, "keys": ["DB"]}  # CI reruns do not re-alert
    [leak] = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "secret.leaked")
    ).scalars()
    assert leak.details["key"] == "DB" and leak.details["path"] == "app/.env"
    assert leak.details["commit"] == "ab" * 20 and VALUE not in str(leak.details)


def test_a_scan_only_token_can_never_receive_values(api_client: FlaskClient, token: str) -> None:
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": _slug()}
    reply = api_client.post(
        "/api/v1/requests", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status_code == 403 and "no release scope" in reply.get_json()["message"]
