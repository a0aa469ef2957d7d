"""Per-bundle aliases ("export as") through the real api, worker and envelope (issue #19).

A bundle attaches `PROD_DATABASE_URL` exported as `DATABASE_URL`: the approver
ticks the exported name, the signed envelope carries it, exports use it, and the
audit log keeps both names. Exported names are unique within a bundle.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from envcat.cli.formats import render
from envcat.core.settings import Settings
from envcat.models import AuditEvent, db
from tests.support.api import REQUESTS, Cli, ensure_workspace
from tests.support.envelopes import open_verified
from tests.support.settings import make_settings

TENANT, OWNER = "t-acme", "u-owner"
PROD_URL = "postgres://prod.internal/app"


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(database_url, redis_url, broker_url)


@pytest.fixture
def owner(signed_as: Any) -> Any:
    ensure_workspace(TENANT)
    return signed_as(OWNER, TENANT, "owner")


def _bundle(client: Any, name: str = "production/api") -> str:
    response = client.post("/api/v1/bundles", {"name": name})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _key(client: Any, name: str, value: str, **extra: Any) -> str:
    response = client.post("/api/v1/keys", {"name": name, "value": value, **extra})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _attach(client: Any, bundle: str, key_id: str, alias: str | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"key_id": key_id, **extra}
    if alias is not None:
        body["alias"] = alias
    return client.post(f"/api/v1/bundles/{bundle}/keys", body)


def _events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def test_an_alias_is_shown_with_the_key_name_and_audited_with_both(owner: Any) -> None:
    bundle = _bundle(owner)
    key_id = _key(owner, "PROD_DATABASE_URL", PROD_URL)
    response = _attach(owner, bundle, key_id, "DATABASE_URL")
    assert response.status_code == 201, response.get_json()
    (entry,) = response.get_json()["keys"]
    assert (entry["name"], entry["alias"], entry["export_name"]) == (
        "PROD_DATABASE_URL",
        "DATABASE_URL",
        "DATABASE_URL",
    )
    (event,) = _events("bundle.key_attached")
    assert event.details == {
        "bundle": "production/api",
        "key_id": key_id,
        "key": "PROD_DATABASE_URL",
        "alias": "DATABASE_URL",
    }
    assert owner.delete(f"/api/v1/bundles/{bundle}/keys/{key_id}").status_code == 204
    (detached,) = _events("bundle.key_detached")
    assert detached.details["alias"] == "DATABASE_URL"


def test_exported_names_are_unique_within_a_bundle(owner: Any) -> None:
    bundle = _bundle(owner)
    plain = _key(owner, "DATABASE_URL", "local")
    prod = _key(owner, "PROD_DATABASE_URL", PROD_URL)
    staging = _key(owner, "STAGING_DATABASE_URL", "staging")
    assert _attach(owner, bundle, plain).status_code == 201
    # An alias may not take the name of an un-aliased key, nor another alias.
    clash = _attach(owner, bundle, prod, "DATABASE_URL")
    assert clash.status_code == 409 and clash.get_json()["error"] == "conflict"
    assert _attach(owner, bundle, prod, "MAIN_DB").status_code == 201
    assert _attach(owner, bundle, staging, "MAIN_DB").status_code == 409
    # The same key may carry different names in different bundles.
    other = _bundle(owner, "staging/api")
    assert _attach(owner, other, staging, "DATABASE_URL").status_code == 201
    # Renaming a key onto a name its bundle exports for another key is refused.
    renamed = owner.patch(f"/api/v1/keys/{plain}", {"name": "MAIN_DB"})
    assert renamed.status_code == 409
    # An import never attaches a second variable under an exported alias.
    imported = owner.post(
        f"/api/v1/bundles/{bundle}/import", {"format": "dotenv", "content": "MAIN_DB=x\n"}
    )
    assert imported.get_json()["skipped"] == ["MAIN_DB"]
    names = [k["export_name"] for k in owner.get(f"/api/v1/bundles/{bundle}").get_json()["keys"]]
    assert names == ["DATABASE_URL", "MAIN_DB"]


def test_a_bad_or_dangerous_alias_is_refused(owner: Any) -> None:
    bundle = _bundle(owner)
    key_id = _key(owner, "HARMLESS", "/tmp/x.so")
    bad = _attach(owner, bundle, key_id, "not-a-name")
    assert bad.status_code == 400 and bad.get_json()["error"] == "validation_error"
    assert "not-a-name" not in bad.get_data(as_text=True)
    dangerous = _attach(owner, bundle, key_id, "LD_PRELOAD")
    assert dangerous.status_code == 400
    assert owner.get(f"/api/v1/bundles/{bundle}").get_json()["keys"] == []


def test_export_uses_the_alias_and_the_audit_keeps_both_names(owner: Any) -> None:
    bundle = _bundle(owner)
    _attach(owner, bundle, _key(owner, "PROD_DATABASE_URL", PROD_URL), "DATABASE_URL")
    _attach(owner, bundle, _key(owner, "LOG_LEVEL", "info"))
    dotenv = owner.get(f"/api/v1/bundles/{bundle}/export?format=dotenv").get_data(as_text=True)
    assert "DATABASE_URL=" in dotenv and "PROD_DATABASE_URL" not in dotenv
    assert owner.get(f"/api/v1/bundles/{bundle}/export?format=json").get_json() == {
        "DATABASE_URL": PROD_URL,
        "LOG_LEVEL": "info",
    }
    event = _events("bundle.exported")[0]
    assert event.details["keys"] == ["DATABASE_URL", "LOG_LEVEL"]
    assert event.details["aliases"] == {"DATABASE_URL": "PROD_DATABASE_URL"}


def test_the_worker_delivers_the_exported_name_in_the_signed_envelope(
    api_app: Flask, owner: Any, celery_worker: object
) -> None:
    bundle = _bundle(owner)
    _attach(
        owner, bundle, _key(owner, "PROD_DATABASE_URL", PROD_URL), "DATABASE_URL", required=True
    )
    _attach(owner, bundle, _key(owner, "API_KEY", "sk-live-1"))
    _attach(owner, bundle, _key(owner, "UNWANTED", "u"))
    cli = Cli.start(api_app.test_client(), bundle="production/api")
    replies: list[Any] = []
    poller = threading.Thread(target=lambda: replies.append(cli.wait(timeout=20)))
    poller.start()
    time.sleep(0.2)
    # The library name is not a name this bundle delivers.
    wrong = owner.post(
        f"{REQUESTS}/{cli.id}/encrypt-from-bundle",
        {"bundle_id": bundle, "include_keys": ["PROD_DATABASE_URL", "API_KEY"]},
    )
    assert wrong.status_code == 400
    left_out = owner.post(
        f"{REQUESTS}/{cli.id}/encrypt-from-bundle",
        {"bundle_id": bundle, "include_keys": ["API_KEY"]},
    )
    assert left_out.status_code == 400 and "DATABASE_URL" in left_out.get_json()["message"]
    approved = owner.post(
        f"{REQUESTS}/{cli.id}/encrypt-from-bundle",
        {"bundle_id": bundle, "include_keys": ["DATABASE_URL", "API_KEY"]},
    )
    assert approved.status_code == 202, approved.get_json()
    poller.join(timeout=20)
    (reply,) = replies
    envelope = open_verified(cli.private_key, reply.get_json()["ciphertext_base64"])
    assert list(dict(envelope.keys).items()) == [
        ("DATABASE_URL", PROD_URL),
        ("API_KEY", "sk-live-1"),
    ]
    assert envelope.bundle_name == "production/api"
    (event,) = _events("request.approved")
    assert event.details["keys"] == ["DATABASE_URL", "API_KEY"]
    # What `envcat get` prints from this envelope (the CLI's own formatter).
    values = dict(envelope.keys)
    assert render(values, "dotenv").splitlines()[0].startswith("DATABASE_URL=")
    assert f"export DATABASE_URL='{PROD_URL}'" in render(values, "sh")
