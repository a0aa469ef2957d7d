"""Connections and links through the real api and a real worker: roles, tenants, bad
input, credentials that never come back out, and "test connection" / "sync now" as tasks."""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from flask import Flask

from envcat.core.settings import Settings
from envcat.models import Connection, db
from envcat.services.connectors import connections
from envcat.workers.factory import QUEUES, create_celery
from tests.connectors.support import ACCESS_KEY_ID, REGION, ProviderProxy, aws
from tests.support.api import redis_dump
from tests.support.broker import broker_messages

CANARY_SECRET = f"canary-aws-secret-{secrets.token_hex(12)}"
CANARY_VALUE = f"canary-value-{secrets.token_hex(12)}"


def _body(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "prod-aws",
        "provider": "aws",
        "region": REGION,
        "endpoint_url": endpoint,
        "aws": {"access_key_id": ACCESS_KEY_ID, "secret_access_key": CANARY_SECRET},
        **extra,
    }


def _eventually(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
        db.session.expire_all()


def test_credentials_are_write_only_and_bound_to_their_row(
    signed_as: Any, proxy: ProviderProxy
) -> None:
    owner = signed_as("u-a", "t-a")
    created = owner.post("/api/v1/connections", _body(proxy.url))
    assert created.status_code == 201, created.get_json()
    connection = created.get_json()
    assert connection["status"] == "untested" and connection["region"] == REGION
    for reply in (
        created,
        owner.get("/api/v1/connections"),
        owner.get(f"/api/v1/connections/{connection['id']}"),
        owner.patch(f"/api/v1/connections/{connection['id']}", {"name": "renamed"}),
    ):
        assert reply.status_code == 200 or reply.status_code == 201
        text = reply.get_data(as_text=True)
        assert CANARY_SECRET not in text and "secret_access_key" not in text
    row = db.session.get(Connection, connection["id"])
    assert row is not None and CANARY_SECRET not in row.credentials
    assert connections.credentials(row)["secret_access_key"] == CANARY_SECRET
    # A ciphertext copied onto another connection does not decrypt there.
    other = owner.post("/api/v1/connections", _body(proxy.url, name="other")).get_json()
    other_row = db.session.get(Connection, other["id"])
    assert other_row is not None
    other_row.credentials = row.credentials
    db.session.commit()
    with pytest.raises(Exception, match="do not decrypt"):
        connections.credentials(other_row)


def test_bad_input_is_a_400_that_never_echoes_the_secret(signed_as: Any) -> None:
    owner = signed_as("u-a", "t-a")
    cases = [
        _body("http://127.0.0.1:1", region=None),
        _body("ftp://x"),
        {
            **_body("http://127.0.0.1:1"),
            "aws": {"access_key_id": "bad id", "secret_access_key": CANARY_SECRET},
        },
        {**_body("http://127.0.0.1:1"), "provider": "gcp"},
        {**_body("http://127.0.0.1:1"), "unknown": CANARY_SECRET},
    ]
    for body in cases:
        reply = owner.post("/api/v1/connections", body)
        assert reply.status_code == 400, body
        assert reply.get_json()["error"] == "validation_error"
        assert CANARY_SECRET not in reply.get_data(as_text=True)
    assert owner.post("/api/v1/links", {"direction": "sideways"}).status_code == 400
    created = owner.post("/api/v1/connections", _body("http://127.0.0.1:1")).get_json()
    path = f"/api/v1/connections/{created['id']}"
    for patch in (
        {"region": None},
        {"project_id": "my-project-1"},
        {"name": None},
        {"gcp": {"service_account_json": CANARY_SECRET}},
    ):
        reply = owner.patch(path, patch)
        assert reply.status_code == 400, patch
        assert CANARY_SECRET not in reply.get_data(as_text=True)
    assert owner.get(path).get_json()["region"] == REGION  # a refused change changed nothing
    bundle = owner.post("/api/v1/bundles", {"name": "nulls"}).get_json()
    link = owner.post(
        "/api/v1/links",
        {"connection_id": created["id"], "bundle_id": bundle["id"], "direction": "pull"},
    ).get_json()
    link_path = f"/api/v1/links/{link['id']}"
    # An explicit null would blank a required column (the api fuzzer found a 500 here).
    patches: list[dict[str, Any]] = [
        {"mapping": None, "interval_seconds": 120},
        {"direction": None},
    ]
    for patch in patches:
        reply = owner.patch(link_path, patch)
        assert reply.status_code == 400, patch
        assert "cannot be null" in reply.get_data(as_text=True)
    assert owner.get(link_path).get_json()["interval_seconds"] == link["interval_seconds"]


def test_members_cannot_manage_and_another_tenant_sees_nothing(
    signed_as: Any, proxy: ProviderProxy
) -> None:
    owner = signed_as("u-a", "t-a")
    connection = owner.post("/api/v1/connections", _body(proxy.url)).get_json()
    bundle = owner.post("/api/v1/bundles", {"name": "app"}).get_json()
    link = owner.post(
        "/api/v1/links",
        {"connection_id": connection["id"], "bundle_id": bundle["id"], "direction": "pull"},
    ).get_json()
    member = signed_as("u-m", "t-a", "member")
    assert member.get("/api/v1/connections").status_code == 403
    assert member.post("/api/v1/connections", _body(proxy.url, name="m")).status_code == 403
    assert member.post(f"/api/v1/links/{link['id']}/sync").status_code == 403
    assert member.get(f"/api/v1/links/{link['id']}").status_code == 200  # status is readable

    intruder = signed_as("u-b", "t-b")
    their_bundle = intruder.post("/api/v1/bundles", {"name": "mine"}).get_json()
    cid, lid = connection["id"], link["id"]
    for method, path, body in [
        ("GET", f"/api/v1/connections/{cid}", None),
        ("PATCH", f"/api/v1/connections/{cid}", {"name": "stolen"}),
        ("POST", f"/api/v1/connections/{cid}/test", None),
        ("DELETE", f"/api/v1/connections/{cid}", None),
        ("GET", f"/api/v1/links/{lid}", None),
        ("POST", f"/api/v1/links/{lid}/sync", None),
        ("DELETE", f"/api/v1/links/{lid}", None),
        ("GET", f"/api/v1/bundles/{bundle['id']}/links", None),
        (
            "POST",
            "/api/v1/links",
            {"connection_id": cid, "bundle_id": their_bundle["id"], "direction": "pull"},
        ),
    ]:
        reply = intruder.call(method, path, body)
        assert reply.status_code == 404, (method, path)
        assert reply.get_json()["error"] == "not_found"
    assert intruder.get("/api/v1/connections").get_json() == {"connections": []}
    assert intruder.get("/api/v1/links").get_json() == {"links": []}
    assert owner.get(f"/api/v1/connections/{cid}").get_json()["name"] == "prod-aws"


def test_test_and_sync_run_as_tasks_and_credentials_leak_nowhere(
    signed_as: Any,
    service_app: Flask,
    settings: Settings,
    proxy: ProviderProxy,
    redis_client: redis.Redis,
    broker_url: str,
    json_logs: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    aws(proxy.upstream).create_secret(Name="app/TOKEN", SecretString=CANARY_VALUE)
    owner = signed_as("u-a", "t-a")
    connection = owner.post("/api/v1/connections", _body(proxy.url)).get_json()
    bundle = owner.post("/api/v1/bundles", {"name": "app"}).get_json()
    link = owner.post(
        "/api/v1/links",
        {
            "connection_id": connection["id"],
            "bundle_id": bundle["id"],
            "prefix": "app/",
            "direction": "pull",
        },
    ).get_json()
    assert owner.post(f"/api/v1/connections/{connection['id']}/test").status_code == 202
    sync = owner.post(f"/api/v1/links/{link['id']}/sync")
    assert sync.status_code == 202
    assert owner.post(f"/api/v1/links/{link['id']}/sync").status_code == 409  # one at a time
    queued = broker_messages(broker_url)
    assert link["id"] in queued and sync.get_json()["run_id"] in queued
    assert CANARY_SECRET not in queued

    worker_app = create_celery(settings.model_copy(update={"log_level": "DEBUG"}), service_app)
    with start_worker(worker_app, pool="solo", queues=list(QUEUES), perform_ping_check=False):
        _eventually(
            lambda: owner.get(f"/api/v1/links/{link['id']}").get_json()["last_status"] == "ok"
        )
        _eventually(
            lambda: (
                owner.get(f"/api/v1/connections/{connection['id']}").get_json()["status"] == "ok"
            )
        )
    listed = owner.get(f"/api/v1/bundles/{bundle['id']}/links").get_json()["links"]
    assert listed[0]["last_summary"]["pulled"] == 1 and listed[0]["running"] is False
    assert proxy.calls and {key_id for *_, key_id in proxy.calls} == {ACCESS_KEY_ID}
    revealed = owner.get("/api/v1/keys").get_json()["keys"]
    assert [k["name"] for k in revealed] == ["TOKEN"]

    logs = json_logs.getvalue() + capfd.readouterr().err
    assert '"process": "worker"' in logs
    for where, blob in [
        ("logs", logs),
        ("Redis", redis_dump(redis_client)),
        ("the broker", broker_messages(broker_url)),
        ("audit", json.dumps(owner.get("/api/v1/audit").get_json())),
    ]:
        assert CANARY_SECRET not in blob, where
        assert CANARY_VALUE not in blob, where
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    for path in database.parent.glob(database.name + "*"):
        data = path.read_bytes()
        assert CANARY_SECRET.encode() not in data and CANARY_VALUE.encode() not in data
