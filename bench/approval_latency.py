"""Approval-to-delivery latency, beside a bare Celery no-op round trip measured in the same run.

Starts its own private redis-server (defaults), one real worker process
(`celery -A envcat.workers worker --pool solo`, as deployed), the bare Celery app of
`bench/baselines.py` with its own solo worker on the same Redis, and the api
in-process on a fresh SQLite database. For each of N rounds, interleaved so machine
noise hits all alike:

1. baseline: `send_task` to the bare app, whose task LPUSHes a key the client BLPOPs
   (the floor of one task-queue hop, issue #14);
2. a CLI creates a request and long-polls `wait?timeout=25` in a thread; once its
   take has claimed the request (it then waits for a wake-up), the approver's signed
   encrypt-from-bundle call (a 5-key bundle) is made; the latency is from that call's
   202 to the long-poll answer;
3. extra line: the project's own `envcat.ping` task round trip (not the baseline: it
   carries EnvCat's per-task overhead, which the ratio must show, not hide).

Targets: p50 within 3x the bare hop's p50, p99 within 10x its p99.

With `--big-keys N` (default 1,000; 0 to skip), each round also approves a bundle of
N keys, and its 202 -> answer p50 is printed beside the 5-key p50 of the same run
(issue #14's target: at most 1.5x).

    python bench/approval_latency.py [--n 200] [--big-keys 1000] [--check]
"""

from __future__ import annotations

import argparse
import json
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
from typing import Any, NamedTuple

import redis
from flask import Flask
from flask.testing import FlaskClient

from envcat.api import create_app
from envcat.core import signing
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.models import db, migrate
from envcat.services.access_requests import store

# The seeding helpers and the private redis-server live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hardening.processes import server_environment
from tests.support import RedisServer, free_port
from tests.support.api import SeedKey, seed_bundle
from tests.support.settings import make_settings
from tests.support.signed import add_member

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import BareCelery, bare_celery

TENANT, USER = "t-bench", "u-bench"
POLLING_MEAN_SECONDS = 1.5  # a 3-second poll interval waits 1.5 s on average
TARGET_RATIO = 3.0
TARGET_P99_RATIO = 10.0
TARGET_BIG_RATIO = 1.5
WARMUP = 5
BUNDLE_KEYS = [SeedKey(f"KEY_{i}", f"value-{i}-" + "x" * 40) for i in range(5)]


def _settings(directory: Path, redis_url: str) -> Settings:
    return make_settings(
        f"sqlite:///{directory / 'envcat.db'}",
        f"{redis_url}/0",
        f"{redis_url}/1",
        request_rate_limit="1000000/minute",
        log_level="WARNING",
        **_known(max_pending_per_ip=1_000_000),
    )


def _known(**values: object) -> dict[str, Any]:
    """The settings this tree has (another engineer may be adding or renaming some)."""
    return {k: v for k, v in values.items() if k in Settings.model_fields}


def _environment(settings: Settings) -> dict[str, str]:
    return server_environment(settings)


@contextmanager
def _worker(settings: Settings, log: Path) -> Iterator[None]:
    argv = [sys.executable, "-m", "celery", "-A", "envcat.workers", "worker", "-Q", "approvals"]
    argv += ["--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, env=_environment(settings), stdout=sink, stderr=sink)
        try:
            yield
        except BaseException:
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            child.terminate()
            child.wait(timeout=30)


class Bench:
    """The in-process api, its Celery app, and the clients that time one round."""

    def __init__(self, app: Flask, settings: Settings, bundle_id: str, bare: BareCelery) -> None:
        self.app, self.settings, self.bundle_id, self.bare = app, settings, bundle_id, bare
        self.names = [key.name for key in BUNDLE_KEYS]
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

    def wait_until_waiting(self, request_id: str) -> None:
        """Return once the long poll of `request_id` took and waits: its take claimed the
        request, and it registered for wake-ups before that take."""
        key = store.waiter_key(request_id)
        while not self.redis.exists(key):
            time.sleep(0.0005)

    def approval_latency(self, bundle: tuple[str, list[str]] | None = None) -> float:
        """Seconds from the approve call returning to the long poll's answer arriving.

        `bundle` is (id, key names) to approve; the 5-key bundle by default.
        """
        bundle_id, names = bundle or (self.bundle_id, self.names)
        pub = encode_public_key(generate_keypair())
        body = {"client_pubkey": pub, "workspace": TENANT}
        created = self.client.post("/api/v1/requests", json=body).get_json()
        arrived: list[tuple[float, Any]] = []

        def long_poll() -> None:
            reply = self.app.test_client().get(
                f"/api/v1/requests/{created['id']}/wait?timeout=25",
                headers={"X-Poll-Token": created["poll_token"]},
            )
            arrived.append((time.perf_counter(), reply.get_json()))
            reply.close()  # as a server does once the reply is sent: runs the delivery's audit

        poller = threading.Thread(target=long_poll)
        poller.start()
        self.wait_until_waiting(created["id"])
        approve = f"/api/v1/requests/{created['id']}/encrypt-from-bundle"
        response = self._signed_post(approve, {"bundle_id": bundle_id, "include_keys": names})
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


class Timings(NamedTuple):
    """Seconds per round: approvals, bare Celery hops, envcat.ping, big-bundle approvals."""

    latencies: list[float]
    floors: list[float]
    pings: list[float]
    big: list[float]


def run(n: int, big_keys: int = 0) -> Timings:
    """Time n rounds (a big-bundle approval in each too when `big_keys`)."""
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
                bundle_id = seed_bundle(TENANT, "bench/api", BUNDLE_KEYS)
                big_specs = [
                    SeedKey(f"BIG_{i:04d}", f"big-{i}-" + "x" * 40) for i in range(big_keys)
                ]
                big = (seed_bundle(TENANT, "bench/big", big_specs), [k.name for k in big_specs])
                db.session.commit()
                with (
                    _worker(settings, directory / "worker.log"),
                    bare_celery(server.url, directory) as bare,
                ):
                    bench = Bench(app, settings, bundle_id, bare)
                    bench.ping_round_trip()  # waits for the worker to be up
                    for _ in range(WARMUP):
                        bare.round_trip()
                        bench.ping_round_trip()
                        bench.approval_latency()
                    if big_keys:
                        bench.approval_latency(big)
                    timings = Timings([], [], [], [])
                    for _ in range(n):
                        timings.floors.append(bare.round_trip())
                        timings.latencies.append(bench.approval_latency())
                        timings.pings.append(bench.ping_round_trip())
                        if big_keys:
                            timings.big.append(bench.approval_latency(big))
            return timings
        finally:
            server.stop()


def main() -> int:
    """Print p50/p99 of both and their ratios; with --check, fail above the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="approvals to time (default 200)")
    parser.add_argument(
        "--big-keys", type=int, default=1000, help="keys of the big bundle (0: skip; default 1000)"
    )
    parser.add_argument("--check", action="store_true", help=f"exit 1 above {TARGET_RATIO}x")
    options = parser.parse_args()
    latencies, floors, pings, big = run(options.n, options.big_keys)
    p50, p99 = _percentiles(latencies)
    bare50, bare99 = _percentiles(floors)
    ping50, ping99 = _percentiles(pings)
    ratio = p50 / bare50
    rows = [
        ("approve 202 -> long-poll answer", p50, p99),
        ("bare Celery no-op round trip (baseline)", bare50, bare99),
        ("envcat.ping round trip (extra)", ping50, ping99),
    ]
    print(f"approvals timed: {len(latencies)} (5-key bundle)")
    for label, mid, tail in rows:
        print(f"{label:40} p50 {mid * 1000:7.2f} ms   p99 {tail * 1000:7.2f} ms")
    print(f"{'ratio p50 / bare p50':40} {ratio:.2f}  (target <= {TARGET_RATIO})")
    print(f"{'ratio p99 / bare p99':40} {p99 / bare99:.2f}  (target <= {TARGET_P99_RATIO})")
    print(f"{'envcat.ping p50 / bare p50':40} {ping50 / bare50:.2f}")
    if big:
        big50, big99 = _percentiles(big)
        label = f"{options.big_keys}-key approve 202 -> answer"
        print(f"{label:40} p50 {big50 * 1000:7.2f} ms   p99 {big99 * 1000:7.2f} ms")
        print(f"{'ratio big p50 / 5-key p50':40} {big50 / p50:.2f}  (target <= {TARGET_BIG_RATIO})")
    print(
        f"{'vs 3-second polling (mean 1.5 s)':40} {POLLING_MEAN_SECONDS / p50:.0f}x faster at p50, "
        f"{POLLING_MEAN_SECONDS / p99:.0f}x at p99"
    )
    return 1 if options.check and ratio > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
