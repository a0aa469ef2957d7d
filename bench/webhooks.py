"""Clerk webhook intake and provisioning throughput, against baselines from the same run.

Starts its own private redis-server, the api under gunicorn with the deployed settings
(envcat/api/gunicorn.conf.py: two gevent workers) and one Celery worker process (solo
pool), on a fresh SQLite database (or --database-url), then measures:

1. the bare Flask+Redis app of `bench/baselines.py` (one HSET + EXPIRE per POST,
   the bff's gunicorn numbers) with N concurrent senders: the floor of a POST that
   stores something (baseline); GET /healthz on the api as an extra line;
2. POST /api/v1/webhooks/clerk with N concurrent senders, each a distinct svix-signed
   `user.created`: the rate (and latency) of 202 answers, as a ratio of (1);
3. the time for the bare Celery app's solo worker (`bench/baselines.py`) to run E
   no-op tasks (baseline); the same for EnvCat's worker and `envcat.ping` as an
   extra line;
4. the time for EnvCat's worker, told to consume the provisioning queue once all E
   webhooks are accepted, to provision them all (user, personal tenant, owner
   membership committed), as a ratio of (3).

    python bench/webhooks.py [--senders 16] [--events 1000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis
from celery import Celery
from sqlalchemy import create_engine, func, select
from svix.webhooks import Webhook

from envcat.core.keys import new_kms_key, new_shared_secret
from envcat.models import WebhookEvent, migrate

ROOT = Path(__file__).resolve().parent.parent
# The Clerk payload builders and the private redis-server helper live with the tests.
sys.path.insert(0, str(ROOT))
from tests.hardening.processes import processes  # noqa: E402
from tests.support import RedisServer, free_port, wait_for_port  # noqa: E402
from tests.support.clerk_events import clerk_event, user_data  # noqa: E402
from tests.support.envelopes import TEST_SIGNING_SEED  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from baselines import bare_celery, start_bare_flask  # noqa: E402

BIN = Path(sys.executable).parent
Request = tuple[str, str, bytes, dict[str, str]]


def _environment(database_url: str, redis_url: str, webhook_secret: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": f"{redis_url}/0",
        "CELERY_BROKER_URL": f"{redis_url}/1",
        "BUNDLE_KMS_KEY": new_kms_key(),
        "BFF_SHARED_SECRET": new_shared_secret(),
        "CLERK_WEBHOOK_SECRET": webhook_secret,
        "DELIVERY_SIGNING_KEY": TEST_SIGNING_SEED,  # workers refuse to start without one
        "LOG_LEVEL": "WARNING",
    }


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@dataclass(frozen=True)
class Load:
    """One burst of requests: when it started, how long it took, and the answers."""

    started: float
    seconds: float
    ok: int
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def _send_all(base_url: str, requests: list[Request], senders: int) -> Load:
    """Send with `senders` threads (one keep-alive client each), all starting together."""
    ok = [0] * senders
    latencies: list[list[float]] = [[] for _ in range(senders)]
    barrier = threading.Barrier(senders + 1)

    def sender(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            barrier.wait()
            for method, path, body, headers in requests[index::senders]:
                sent = time.perf_counter()
                response = client.request(method, path, content=body, headers=headers)
                latencies[index].append(time.perf_counter() - sent)
                ok[index] += response.is_success
        barrier.wait()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    barrier.wait()
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join()
    return Load(started, elapsed, sum(ok), [x for chunk in latencies for x in chunk])


def _signed_user_created(secret: str) -> Request:
    user_id = f"user_{uuid.uuid4().hex[:24]}"
    body = json.dumps(clerk_event("user.created", user_data(user_id))).encode("utf-8")
    msg_id, at = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body.decode("utf-8")),
        "Content-Type": "application/json",
    }
    return "POST", "/api/v1/webhooks/clerk", body, headers


def _wait_until(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            sys.exit("bench: timed out waiting for the worker (see the logs in the temp dir)")
        time.sleep(0.02)


def _control_app(broker_url: str) -> Celery:
    app = Celery("bench", broker=broker_url)
    app.conf.update(task_serializer="json", task_routes={"envcat.ping": {"queue": "approvals"}})
    return app


def _ping_round(app: Celery, data_url: str, count: int) -> float:
    """Seconds for the worker to run `count` bare envcat.ping tasks."""
    reply_key = f"bench:ping:{uuid.uuid4().hex}"
    data = redis.Redis.from_url(data_url)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("envcat.ping", args=[reply_key], producer=producer)
    _wait_until(lambda: int(data.llen(reply_key)) >= count, timeout=300)
    data.close()
    return time.perf_counter() - started


def _drain(app: Celery, database_url: str, events: int) -> float:
    """Let the worker consume the provisioning queue; seconds until every event is applied."""
    engine = create_engine(database_url)
    done = select(func.count()).where(WebhookEvent.processed_at.is_not(None))

    def provisioned() -> bool:
        with engine.connect() as conn:
            return int(conn.execute(done).scalar_one()) >= events

    started = time.perf_counter()
    app.control.add_consumer("provisioning", reply=True, timeout=5)
    _wait_until(provisioned, timeout=600)
    engine.dispose()
    return time.perf_counter() - started


@contextmanager
def _stack(
    database_url: str, workdir: Path, webhook_secret: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """Redis, the api and one worker (on `approvals` only, until told to provision)."""
    redis_server = RedisServer(port=free_port(), directory=workdir / "redis")
    redis_server.start()
    env = _environment(database_url, redis_server.url, webhook_secret)
    port = free_port()
    api = [str(BIN / "gunicorn"), "-c", str(ROOT / "envcat" / "api" / "gunicorn.conf.py")]
    api += ["-b", f"127.0.0.1:{port}", "envcat.api.wsgi:app"]
    worker = [str(BIN / "celery"), "-A", "envcat.workers", "worker", "-Q", "approvals"]
    worker += ["-P", "solo", "-c", "1", "--without-gossip", "--without-mingle", "-l", "WARNING"]
    try:
        with (
            _process(api, env, workdir / "api.log"),
            _process(worker, env, workdir / "worker.log"),
        ):
            wait_for_port(port, timeout=30)
            yield f"http://127.0.0.1:{port}", env
    finally:
        redis_server.stop()


def run(senders: int, events: int, database_url: str | None) -> None:
    """Start everything, measure the four figures and print them."""
    workdir = Path(tempfile.mkdtemp(prefix="envcat-bench-webhooks-"))
    database_url = database_url or f"sqlite:///{workdir / 'envcat.db'}"
    migrate.upgrade(database_url)
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")
    health: list[Request] = [("GET", "/healthz", b"", {})] * max(events, 2000)
    bare_body = json.dumps({"client_pubkey": "A" * 43 + "=", "workspace": "bench"}).encode()
    bare_posts: list[Request] = [
        ("POST", "/api/v1/requests", bare_body, {"Content-Type": "application/json"})
    ] * max(events, 2000)
    with (
        _stack(database_url, workdir, webhook_secret) as (base_url, env),
        processes(workdir / "bare") as group,
    ):
        redis_base = env["REDIS_URL"].rsplit("/", 1)[0]
        bare_url = start_bare_flask(group, redis_base, workdir)
        control = _control_app(env["CELERY_BROKER_URL"])
        _ping_round(control, env["REDIS_URL"], 1)  # the worker is up
        _send_all(base_url, health[: senders * 4], senders)  # warm both api processes
        _send_all(bare_url, bare_posts[: senders * 4], senders)
        baseline = _send_all(bare_url, bare_posts, senders)
        health_load = _send_all(base_url, health, senders)
        with bare_celery(redis_base, workdir) as bare:
            bare_s = bare.burst(events)
        ping_s = _ping_round(control, env["REDIS_URL"], events)
        hooks = _send_all(
            base_url, [_signed_user_created(webhook_secret) for _ in range(events)], senders
        )
        drain_s = _drain(control, database_url, events)
    print(f"envcat webhook bench: {events} events, {senders} concurrent senders, {database_url}")
    rows = (
        ("bare Flask+Redis POST (baseline)", baseline),
        ("api GET /healthz (extra)", health_load),
        ("POST webhooks → 202", hooks),
    )
    for label, load in rows:
        print(
            f"  {label:<32} {load.rate:7.0f} req/s  p50 {load.percentile_ms(0.5):6.1f} ms"
            f"  p95 {load.percentile_ms(0.95):6.1f} ms  ({load.ok}/{len(load.latencies)} ok)"
        )
    print(
        f"  acceptance ratio                 {hooks.rate / baseline.rate:7.2f}x the baseline rate"
    )
    print(f"  {events} bare Celery no-op tasks (baseline)      {bare_s:7.2f} s")
    print(f"  {events} envcat.ping tasks, one worker (extra)   {ping_s:7.2f} s")
    print(
        f"  {events} user.created provisioned, one worker      {drain_s:7.2f} s"
        f"  ({events / drain_s:.0f} events/s; {drain_s / bare_s:.2f}x the baseline)"
    )


def main() -> int:
    """Parse the options and run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=16, help="concurrent senders (16)")
    parser.add_argument("--events", type=int, default=1000, help="user.created events (1000)")
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temp dir")
    options = parser.parse_args()
    run(options.senders, options.events, options.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
