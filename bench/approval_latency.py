"""Approval-to-delivery latency, beside a Celery no-op round trip measured in the same run.

Starts its own private redis-server, one real worker process
(`celery -A envcat.workers worker --pool solo`, as deployed) and the api in-process
on a fresh SQLite database. For each of N rounds, interleaved so machine noise hits
both alike:

1. baseline: publish `envcat.ping` and block until the worker's reply lands in Redis;
2. a CLI creates a request and long-polls `wait?timeout=25` in a thread; once its
   BLPOP is seen in Redis, the approver's signed encrypt-from-bundle call is made;
   the latency is from that call returning to the long-poll response arriving.

Targets: p50 latency within 3x the p50 ping round trip, and far below the 1.5 s
mean wait of 3-second polling.

    python bench/approval_latency.py [--n 200] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from flask import Flask
from flask.testing import FlaskClient

from envcat.api import create_app
from envcat.core import signing
from envcat.core.keys import new_kms_key, new_shared_secret
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.models import migrate

# The seeding helpers and the private redis-server live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.api.test_requests_support import SeedKey, seed_bundle
from tests.support import RedisServer, free_port
from tests.support.signed import add_member

TENANT, USER = "t-bench", "u-bench"
POLLING_MEAN_SECONDS = 1.5  # a 3-second poll interval waits 1.5 s on average
TARGET_RATIO = 3.0
WARMUP = 5


def _settings(directory: Path, redis_url: str) -> Settings:
    return Settings(
        database_url=f"sqlite:///{directory / 'envcat.db'}",
        redis_url=f"{redis_url}/0",
        celery_broker_url=f"{redis_url}/1",
        bundle_kms_key=new_kms_key(),
        bff_shared_secret=new_shared_secret(),
        request_rate_limit="1000000/minute",
        log_level="WARNING",
    )


def _environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CELERY_BROKER_URL": settings.broker_url,
        "BUNDLE_KMS_KEY": settings.kms_key_value(),
        "BFF_SHARED_SECRET": settings.bff_shared_secret.get_secret_value(),
        "LOG_LEVEL": "WARNING",
    }


@contextmanager
def _worker(settings: Settings, log: Path) -> Iterator[None]:
    argv = [sys.executable, "-m", "celery", "-A", "envcat.workers", "worker", "-Q", "approvals"]
    argv += ["--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, env=_environment(settings), stdout=sink, stderr=sink)
        try:
            yield
        finally:
            child.terminate()
            child.wait(timeout=30)


class Bench:
    """The in-process api, its Celery app, and the clients that time one round."""

    def __init__(self, app: Flask, settings: Settings, bundle_id: str) -> None:
        self.app, self.settings, self.bundle_id = app, settings, bundle_id
        self.client: FlaskClient = app.test_client()
        self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.blocking = redis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_timeout=None
        )
        self.ping_task = app.extensions["celery"].tasks["envcat.ping"]

    def ping_round_trip(self) -> float:
        """Seconds from publishing a no-op task to its reply arriving."""
        reply_key = f"bench:ping:{uuid.uuid4().hex}"
        started = time.perf_counter()
        self.ping_task.delay(reply_key)
        if self.blocking.blpop([reply_key], timeout=30) is None:
            raise RuntimeError("the worker did not answer a ping")
        return time.perf_counter() - started

    def _signed_post(self, path: str, body: dict[str, Any]) -> Any:
        raw = json.dumps(body).encode()
        secret = self.settings.bff_shared_secret.get_secret_value()
        headers = signing.sign_headers(secret, USER, TENANT, "POST", path, "", raw)
        headers["Content-Type"] = "application/json"
        return self.client.post(path, data=raw, headers=headers)

    def _blocked_waiters(self) -> int:
        return sum(1 for c in self.redis.client_list() if c["cmd"] == "blpop" and "b" in c["flags"])

    def approval_latency(self) -> float:
        """Seconds from the approve call returning to the long poll's answer arriving."""
        pub = encode_public_key(generate_keypair())
        created = self.client.post("/api/v1/requests", json={"client_pubkey": pub}).get_json()
        arrived: list[tuple[float, Any]] = []

        def long_poll() -> None:
            reply = self.app.test_client().get(
                f"/api/v1/requests/{created['id']}/wait?timeout=25",
                headers={"X-Poll-Token": created["poll_token"]},
            )
            arrived.append((time.perf_counter(), reply.get_json()))

        waiting = self._blocked_waiters()
        poller = threading.Thread(target=long_poll)
        poller.start()
        while self._blocked_waiters() <= waiting:
            time.sleep(0.0005)
        approve = f"/api/v1/requests/{created['id']}/encrypt-from-bundle"
        response = self._signed_post(approve, {"bundle_id": self.bundle_id, "include_keys": ["A"]})
        approved = time.perf_counter()
        if response.status_code != 202:
            raise RuntimeError(f"approval refused: {response.get_json()}")
        poller.join(timeout=30)
        at, body = arrived[0]
        if body.get("status") != "ready":
            raise RuntimeError(f"the long poll ended with {body}")
        return at - approved


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def run(n: int) -> tuple[list[float], list[float]]:
    """Return (approval latencies, ping round trips) in seconds, n of each."""
    with tempfile.TemporaryDirectory(prefix="envcat-bench-") as tmp:
        directory = Path(tmp)
        server = RedisServer(port=free_port(), directory=directory / "redis")
        server.start()
        try:
            settings = _settings(directory, server.url)
            migrate.upgrade(settings.database_url)
            app = create_app(settings)
            with app.app_context():
                add_member(USER, TENANT)
                bundle_id = seed_bundle(TENANT, "bench/api", [SeedKey("A", "alpha")])
                with _worker(settings, directory / "worker.log"):
                    bench = Bench(app, settings, bundle_id)
                    bench.ping_round_trip()  # waits for the worker to be up
                    for _ in range(WARMUP):
                        bench.ping_round_trip()
                        bench.approval_latency()
                    latencies, pings = [], []
                    for _ in range(n):
                        pings.append(bench.ping_round_trip())
                        latencies.append(bench.approval_latency())
            return latencies, pings
        finally:
            server.stop()


def main() -> int:
    """Print p50/p99 of both and their ratios; with --check, fail above the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="approvals to time (default 200)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 above {TARGET_RATIO}x")
    options = parser.parse_args()
    latencies, pings = run(options.n)
    p50, p99 = _percentiles(latencies)
    ping50, ping99 = _percentiles(pings)
    ratio = p50 / ping50
    rows = [
        ("approve -> long-poll answer", p50, p99),
        ("envcat.ping round trip (baseline)", ping50, ping99),
    ]
    print(f"approvals timed: {len(latencies)}")
    for label, mid, tail in rows:
        print(f"{label:36} p50 {mid * 1000:7.2f} ms   p99 {tail * 1000:7.2f} ms")
    print(f"{'ratio p50 / ping p50':36} {ratio:.2f}  (target <= {TARGET_RATIO})")
    print(f"{'ratio p99 / ping p99':36} {p99 / ping99:.2f}")
    print(
        f"{'vs 3-second polling (mean 1.5 s)':36} {POLLING_MEAN_SECONDS / p50:.0f}x faster at p50, "
        f"{POLLING_MEAN_SECONDS / p99:.0f}x at p99"
    )
    return 1 if options.check and ratio > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
