"""A real `celery -A envcat.workers worker` (prefork pool, multiprocess metrics):
JSON logs carrying the api's request id, and /metrics with real task figures."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery
from celery.signals import before_task_publish
from flask import Flask

from envcat.core.logging import request_id_var
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.core.wire import REQUEST_ID_HEADER
from envcat.ops.config import settings_environment
from envcat.services import metrics
from envcat.workers.factory import QUEUES, create_celery
from envcat.workers.observability import QUEUE_DEPTH_SECONDS, queue_depth, record_queue_depth
from envcat.workers.observability import REQUEST_ID_HEADER as MESSAGE_HEADER
from tests.support import free_port, port_answers, wait_for_port
from tests.support.cli_env import clean_environment
from tests.support.databases import migrated
from tests.support.settings import make_settings
from tests.support.signed import SignedClient, add_member

pytestmark = pytest.mark.slow
CANARY = "canary-observability-5c1f0a"


@dataclass
class RunningWorker:
    settings: Settings
    metrics_url: str
    log_path: Path

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, redis_base_url: str, redis_dbs: tuple[int, int]
) -> Iterator[RunningWorker]:
    """One worker process for the module, with its own SQLite and Redis databases."""
    directory = tmp_path_factory.mktemp("observed-worker")
    data, broker = _private_dbs(redis_base_url, redis_dbs)
    for db in (data, broker):
        redis.Redis.from_url(f"{redis_base_url}/{db}").flushdb()
    settings = make_settings(
        f"sqlite:///{directory / 'envcat.db'}",
        f"{redis_base_url}/{data}",
        f"{redis_base_url}/{broker}",
        worker_metrics_port=free_port(),
    )
    migrated(settings.database_url)
    multiproc = directory / "prometheus"
    multiproc.mkdir()
    env = clean_environment(**settings_environment(settings))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    log_path = directory / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "envcat.workers", "worker"]
    argv += ["-Q", ",".join(QUEUES), "--pool", "prefork", "--concurrency", "1"]
    argv += ["-n", f"observed-{uuid.uuid4().hex[:8]}@%h", "--without-mingle", "--without-gossip"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(settings.worker_metrics_port, timeout=90)
        yield RunningWorker(
            settings, f"http://127.0.0.1:{settings.worker_metrics_port}/metrics", log_path
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # never leave a worker behind, even a stuck one
            process.wait()


def _private_dbs(redis_base_url: str, taken: tuple[int, int]) -> tuple[int, int]:
    """Two Redis databases no other test uses: no stray message reaches this worker."""
    if redis_base_url.endswith(":6379"):  # the machine's shared Redis: pick at random
        first, second = random.sample([db for db in range(1, 16) if db not in taken], 2)
        return first, second
    return 2, 3


def _sample(metrics_text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in metrics_text.splitlines():
        metric, _, value = line.rpartition(" ")
        if metric == f"{name}{{{wanted}}}":
            return float(value)
    return None


def _scrape_until(url: str, name: str, minimum: float, **labels: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        text = httpx.get(url, timeout=5).text
        value = _sample(text, name, **labels)
        if (value is not None and value >= minimum) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def _publisher(settings: Settings) -> Celery:
    return create_celery(settings)


def test_metrics_listen_on_loopback_only_by_default(worker: RunningWorker) -> None:
    port = worker.settings.worker_metrics_port
    assert worker.settings.worker_metrics_host == "127.0.0.1"
    assert port_answers(port, host="127.0.0.1")
    # Another address of this machine (all of 127/8 reaches it): nothing listens there.
    assert not port_answers(port, host="127.0.0.2")


def test_metrics_endpoint_reports_task_durations_failures_and_queue_depth(
    worker: RunningWorker,
) -> None:
    app = _publisher(worker.settings)
    reply_key = f"test:ping:{uuid.uuid4().hex}"
    app.send_task("envcat.ping", args=(reply_key,))
    client = redis.Redis.from_url(worker.settings.redis_url, decode_responses=True)
    assert client.blpop([reply_key], timeout=30) is not None
    app.send_task("envcat.rotate_kms", args=(0,))  # a bad batch size: the task fails

    text = _scrape_until(
        worker.metrics_url, "envcat_task_failures_total", 1, task="envcat.rotate_kms"
    )
    assert _sample(text, "envcat_task_duration_seconds_count", task="envcat.ping") == 1
    duration = _sample(text, "envcat_task_duration_seconds_sum", task="envcat.ping")
    assert duration is not None
    assert 0 < duration < 5
    assert _sample(text, "envcat_task_failures_total", task="envcat.rotate_kms") == 1
    assert _sample(text, "envcat_task_failures_total", task="envcat.ping") is None
    # The depth is sampled every 15 s: one sample may have caught rotate_kms still queued.
    deadline = time.monotonic() + QUEUE_DEPTH_SECONDS + 10
    while any(_sample(text, "envcat_queue_depth", queue=q) != 0 for q in QUEUES):
        assert time.monotonic() < deadline, text
        time.sleep(0.5)
        text = httpx.get(worker.metrics_url, timeout=5).text


def _approve_through_the_api(settings: Settings, request_id: str) -> str:
    """Create a request and approve it with X-Request-Id; return the access-request id."""
    from envcat.api import create_app

    api = create_app(settings)
    with api.app_context():
        add_member("usr_obs", "ten_obs", "owner")
        signed = SignedClient(
            api.test_client(), settings.bff_shared_secret.get_secret_value(), "usr_obs", "ten_obs"
        )
        bundle = signed.post("/api/v1/bundles", {"name": "obs/app"}).get_json()
        keys = f"/api/v1/bundles/{bundle['id']}/keys"
        assert signed.post(keys, {"name": "OBS_TOKEN", "value": CANARY}).status_code == 201
        public_key = encode_public_key(generate_keypair())
        body = {"client_pubkey": public_key, "workspace": "ten-obs"}
        created = api.test_client().post("/api/v1/requests", json=body)
        access_id = created.get_json()["id"]
        approve = signed.post(
            f"/api/v1/requests/{access_id}/encrypt-from-bundle",
            {"bundle_id": bundle["id"], "include_keys": ["OBS_TOKEN"]},
            headers={REQUEST_ID_HEADER: request_id},
        )
        assert approve.status_code == 202, approve.get_json()
    return str(access_id)


def _wait_for_line(worker: RunningWorker, *fragments: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        for line in worker.log_lines():
            if all(fragment in str(line["event"]) for fragment in fragments):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no worker log line with {fragments}")
        time.sleep(0.2)


def test_task_log_lines_carry_the_request_id_of_the_api_call(worker: RunningWorker) -> None:
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    access_id = _approve_through_the_api(worker.settings, request_id)
    done = _wait_for_line(worker, "envcat.encrypt_from_bundle", "succeeded")
    assert done["request_id"] == request_id
    assert done["process"] == "worker"
    assert done["level"] == "info"

    # The id is bound for that task only: the next task in the same pool process has none.
    # (The in-process api above left its last id bound in this thread: publish without it.)
    outer = request_id_var.set(None)
    try:
        reply_key = f"test:ping:{uuid.uuid4().hex}"
        sent = _publisher(worker.settings).send_task("envcat.ping", args=(reply_key,))
    finally:
        request_id_var.reset(outer)
    after = _wait_for_line(worker, f"envcat.ping[{sent.id}]", "succeeded")
    assert "request_id" not in after

    log_text = worker.log_path.read_text(encoding="utf-8", errors="replace")
    assert CANARY not in log_text
    assert access_id not in json.dumps(after)


def test_request_id_travels_in_the_message_headers(service_app: Flask, settings: Settings) -> None:
    app = create_celery(settings, service_app)
    published: list[dict[str, object]] = []

    def capture(headers: dict[str, object] | None = None, **_: object) -> None:
        published.append(dict(headers or {}))

    before_task_publish.connect(capture, weak=False)
    # An api request served earlier in this test process may have left an id bound.
    outer = request_id_var.set(None)
    try:
        inner = request_id_var.set("req-header-test")
        app.send_task("envcat.ping", args=("test:none",))
        request_id_var.reset(inner)
        app.send_task("envcat.ping", args=("test:none",))
    finally:
        request_id_var.reset(outer)
        before_task_publish.disconnect(capture)
        app.control.purge()
    assert published[0][MESSAGE_HEADER] == "req-header-test"
    assert MESSAGE_HEADER not in published[1]


def test_queue_depth_counts_waiting_messages(settings: Settings, service_app: Flask) -> None:
    app = create_celery(settings, service_app)
    queue = f"depth-test-{uuid.uuid4().hex[:8]}"  # no worker consumes it
    app.conf.task_routes = {"envcat.ping": {"queue": queue}}
    try:
        for _ in range(3):
            app.send_task("envcat.ping", args=("test:none",))
        record_queue_depth(app)
        assert metrics.QUEUE_DEPTH.labels(queue=queue)._value.get() == 3
        with app.connection_for_write() as connection:
            assert queue_depth(connection, "no-such-queue") == 0
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)  # type: ignore[attr-defined]  # kombu types it as StdChannel
