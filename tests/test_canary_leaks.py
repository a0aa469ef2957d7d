"""Canary values through a full approval: they reach the CLI and nowhere else.

Scanned after the flow: every key and value in the app Redis, every Celery message
in the broker (queues and `unacked`, bodies decoded), the JSON logs of the api and
the worker at DEBUG, the bytes of the SQLite files, and every span the api and the worker
exported (attributes, events, status) with OpenTelemetry tracing on.
"""

from __future__ import annotations

import base64
import io
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from flask import Flask
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from envcat.core.settings import Settings
from envcat.workers.factory import QUEUES, create_celery
from tests.support.api import (
    REQUESTS,
    Cli,
    SeedKey,
    redis_dump,
    seed_bundle,
    wait_until_final,
)
from tests.support.broker import broker_messages
from tests.support.traces import collect_spans, spans_text

TENANT = "t-canary"
CANARIES = {
    "DATABASE_PASSWORD": f"canary-db-{secrets.token_hex(8)}",
    "API_TOKEN": f"canary-api-{secrets.token_hex(8)}",
    "PEM": f"-----BEGIN canary-pem-{secrets.token_hex(8)}-----\nline two\n",
}


def _needles() -> list[bytes]:
    """Each canary, and its base64 form, as bytes to search for."""
    found = []
    for value in CANARIES.values():
        core = value.split("\n")[0].encode()
        found += [core, base64.b64encode(core)[:-4], base64.urlsafe_b64encode(core)[:-4]]
    return found


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory; listed first by the test so it starts before the apps."""
    with collect_spans(settings) as exporter:
        yield exporter


def _assert_clean(where: str, data: bytes | str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for needle in _needles():
        assert needle not in blob, f"a canary leaked into {where}"


def test_canaries_reach_the_cli_and_nowhere_else(
    spans: InMemorySpanExporter,
    api_app: Flask,
    signed_as: Any,
    service_app: Flask,
    settings: Settings,
    redis_client: redis.Redis,
    broker_url: str,
    json_logs: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey(k, v) for k, v in CANARIES.items()])
    cli = Cli.start(api_app.test_client(), TENANT, bundle="production/api")
    approved = owner.post(
        f"{REQUESTS}/{cli.id}/encrypt-from-bundle",
        json={"bundle_id": bundle_id, "include_keys": list(CANARIES)},
    )
    assert approved.status_code == 202
    queued = broker_messages(broker_url)
    assert cli.id in queued  # the scan sees the task's (decoded) arguments
    _assert_clean("the queued task message", queued)
    _assert_clean("Redis before delivery", redis_dump(redis_client))

    # The worker sets up its own JSON logging (to stderr) at LOG_LEVEL: make it DEBUG.
    worker_app = create_celery(settings.model_copy(update={"log_level": "DEBUG"}), service_app)
    with start_worker(worker_app, pool="solo", queues=list(QUEUES), perform_ping_check=False):
        reply = wait_until_final(cli)
        _assert_clean("Redis while the sealed payload waits", redis_dump(redis_client))
    assert cli.open(reply.get_json()) == CANARIES  # the values did travel, sealed

    _assert_clean("Redis", redis_dump(redis_client))
    _assert_clean("the broker", broker_messages(broker_url))
    logs = json_logs.getvalue() + capfd.readouterr().err
    assert '"process": "worker"' in logs  # the worker's own JSON logs were captured
    assert '"level": "debug"' in logs
    _assert_clean("the logs", logs)
    exported = spans.get_finished_spans()
    names = {span.name for span in exported}
    assert "run/envcat.encrypt_from_bundle" in names  # the worker's spans were traced
    assert any(name.startswith("POST /api/v1/requests/") for name in names)  # and the api's
    traced = spans_text(exported)
    assert cli.id in traced  # the scan reads real span content
    _assert_clean("the exported spans", traced)
    if settings.database_url.startswith("sqlite:///"):
        database = Path(settings.database_url.removeprefix("sqlite:///"))
        files = list(database.parent.glob(database.name + "*"))  # the db, -wal and -shm
        assert database in files
        for path in files:
            _assert_clean(path.name, path.read_bytes())
