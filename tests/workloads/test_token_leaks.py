"""Machine credentials are spent, never kept (issue #16).

An ID token and a service token each get a real automatic delivery (api, real worker
at DEBUG); afterwards neither token, nor its signature or secret part, is found in
the app Redis, the broker's messages, the JSON logs of api and worker, or the bytes
of the SQLite files. Only the token hashes and the service token's prefix remain.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from flask import Flask
from flask.testing import FlaskClient

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.workers.factory import QUEUES, create_celery
from tests.support.api import (
    REQUESTS,
    Cli,
    SeedKey,
    ensure_workspace,
    redis_dump,
    seed_bundle,
    wait_until_final,
)
from tests.support.broker import broker_messages
from tests.support.signed import SignedClient
from tests.workloads.issuer import AUDIENCE, LoopbackIssuer

TENANT = "t-leaks"


def _deliver(client: FlaskClient, body: dict[str, Any], headers: dict[str, str]) -> None:
    private_key = generate_keypair()
    ensure_workspace(TENANT)
    body = {"client_pubkey": encode_public_key(private_key), "workspace": TENANT, **body}
    created = client.post(REQUESTS, json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    data = created.get_json()
    assert data["workload_mode"] == "automatic"
    cli = Cli(client, private_key, data["id"], data["poll_token"], data)
    reply = wait_until_final(cli)
    assert cli.open(reply.get_json()) == {"DATABASE_URL": "v"}


def test_tokens_are_found_nowhere_after_delivery(
    api_app: Flask,
    service_app: Flask,
    signed_as: Any,
    settings: Settings,
    issuer: LoopbackIssuer,
    redis_client: redis.Redis,
    broker_url: str,
    json_logs: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    owner: SignedClient = signed_as("u-owner", TENANT, "owner")
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("DATABASE_URL", "v")])
    policy = owner.post(
        "/api/v1/workload-policies",
        json={
            "name": "ci",
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "rules": [{"claim": "repository", "op": "eq", "value": "acme/api"}],
            "bundle_id": bundle_id,
            "mode": "automatic",
        },
    )
    assert policy.status_code == 201
    made = owner.post("/api/v1/service-tokens", json={"name": "ci", "bundle_id": bundle_id})
    service_token = made.get_json()["token"]
    id_token = issuer.mint()
    client = api_app.test_client()
    worker_app = create_celery(settings.model_copy(update={"log_level": "DEBUG"}), service_app)
    with start_worker(worker_app, pool="solo", queues=list(QUEUES), perform_ping_check=False):
        _deliver(client, {"id_token": id_token}, {})
        _deliver(client, {}, {"Authorization": f"Bearer {service_token}"})
    # ect_<prefix>_<secret>: the secret itself may hold "_" (split once, never into crumbs)
    needles = [id_token, id_token.rsplit(".", 1)[1], service_token, service_token.split("_", 2)[2]]
    places = {
        "Redis": redis_dump(redis_client),
        "the broker": broker_messages(broker_url),
        "the logs": json_logs.getvalue() + capfd.readouterr().err,
    }
    assert '"process": "worker"' in places["the logs"]
    if settings.database_url.startswith("sqlite:///"):
        database = Path(settings.database_url.removeprefix("sqlite:///"))
        for path in database.parent.glob(database.name + "*"):
            places[path.name] = path.read_bytes().decode("latin-1")
    for where, text in places.items():
        for needle in needles:
            assert needle not in text, f"a token leaked into {where}"
