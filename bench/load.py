"""Load and soak: mixed traffic through the bff for a bounded time, on loopback only.

Starts its own private redis-server, the api and the bff under gunicorn (gevent)
and one Celery worker process, on a fresh SQLite database, then for `--seconds`
runs at once:

- CLIs (`--clis`): create a request through the bff, long-poll it
  (`wait?timeout=10`) until it is delivered, open the sealed values;
- approvers: approve each request through the bff's proxy (session + CSRF);
- readers: list bundles and read one; writers: create and delete library keys.

It reports per operation the count, throughput, p50 and p99 latency and errors,
the approval-to-delivery time, and the resident memory of every process (and
Redis's used_memory) after warm-up and at the end. Targets: 0 errors, and no
growth after warm-up beyond noise (`--growth-mb`, per process).

Baseline in the same run (issue #22): the bare Flask+Redis app of
`bench/baselines.py` runs beside the stack, and every CLI loop creates one request
on it right before each real create, so both see the same load. Target: the
create's p50 through the bff at most 3x the bare app's p50.

    python bench/load.py [--seconds 60] [--clis 8] [--check]

`--check` exits 1 when there were errors or a process grew beyond `--growth-mb`.
"""

from __future__ import annotations

import argparse
import queue
import secrets
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from nacl.public import PrivateKey

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.models import migrate

# The process and flow helpers live with the hardening tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hardening.flows import BffSession
from tests.hardening.processes import (
    Processes,
    descendants,
    processes,
    rss_bytes,
    server_environment,
    wait_until_healthy,
    worker_argv,
)
from tests.support import RedisServer, free_port
from tests.support.envelopes import open_delivery
from tests.support.settings import make_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import start_bare_flask

VALUES = {f"LOAD_KEY_{i}": f"value-{i}-" + "x" * 40 for i in range(10)}
LONG_POLL_SECONDS = 10
REQUESTS, KEYS = "/api/v1/requests", "/api/v1/keys"
MB = 1024 * 1024
CREATE, BARE_CREATE = "create request", "create (bare app)"
CREATE_TARGET_RATIO = 3.0


@dataclass
class Stats:
    """Latencies and errors per operation, shared by every traffic thread."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, seconds: float) -> None:
        with self.lock:
            self.latencies[op].append(seconds)

    def fail(self, op: str, detail: str) -> None:
        with self.lock:
            self.errors[op] += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{op}: {detail[:200]}")


def timed(
    stats: Stats, op: str, ok: int, send: Callable[..., httpx.Response], *args: Any, **kw: Any
) -> httpx.Response | None:
    """Run `send(*args, **kw)`; record its latency, or an error if it raised or was not `ok`."""
    started = time.perf_counter()
    try:
        reply = send(*args, **kw)
    except httpx.HTTPError as exc:
        stats.fail(op, f"{type(exc).__name__}: {exc}")
        return None
    if reply.status_code != ok:
        stats.fail(op, f"HTTP {reply.status_code} {reply.text}")
        return None
    stats.record(op, time.perf_counter() - started)
    return reply


@dataclass
class Traffic:
    """What the traffic threads share."""

    bff_url: str
    bare_url: str
    person: BffSession
    bundle_id: str
    workspace: str
    stats: Stats
    stop: threading.Event
    to_approve: queue.Queue[str] = field(default_factory=queue.Queue)
    approved_at: dict[str, float] = field(default_factory=dict)


def _poll_until_delivered(
    traffic: Traffic, client: httpx.Client, created: dict[str, str], key: PrivateKey
) -> None:
    while not traffic.stop.is_set():
        reply = timed(
            traffic.stats,
            "wait (long poll)",
            200,
            client.get,
            f"/api/v1/requests/{created['id']}/wait",
            params={"timeout": LONG_POLL_SECONDS},
            headers={"X-Poll-Token": created["poll_token"]},
        )
        if reply is None:
            return
        body = reply.json()
        if body["status"] == "pending":
            continue
        if body["status"] != "ready":
            traffic.stats.fail("delivery", f"status {body['status']}")
            return
        values = open_delivery(key, body["ciphertext_base64"])
        if values != VALUES:
            traffic.stats.fail("delivery", "the opened values differ")
            return
        approved = traffic.approved_at.pop(created["id"], None)
        if approved is not None:
            traffic.stats.record("approval → delivery", time.perf_counter() - approved)
        return


def cli_loop(traffic: Traffic) -> None:
    """Ask, wait, open; again and again, as many `envcat get` runs would."""
    with (
        httpx.Client(base_url=traffic.bff_url, timeout=LONG_POLL_SECONDS + 20) as client,
        httpx.Client(base_url=traffic.bare_url, timeout=LONG_POLL_SECONDS + 20) as bare,
    ):
        while not traffic.stop.is_set():
            key = generate_keypair()
            body = {"client_pubkey": encode_public_key(key), "workspace": traffic.workspace}
            timed(traffic.stats, BARE_CREATE, 201, bare.post, REQUESTS, json=body)
            reply = timed(traffic.stats, CREATE, 201, client.post, REQUESTS, json=body)
            if reply is None:
                time.sleep(0.5)
                continue
            created = reply.json()
            traffic.to_approve.put(created["id"])
            _poll_until_delivered(traffic, client, created, key)


def approver_loop(traffic: Traffic) -> None:
    """Approve every request through the bff's proxy, with a session and its CSRF token."""
    person = traffic.person.clone()
    body = {"bundle_id": traffic.bundle_id, "include_keys": list(VALUES)}
    with person.client:
        while not traffic.stop.is_set():
            try:
                request_id = traffic.to_approve.get(timeout=0.2)
            except queue.Empty:
                continue
            traffic.approved_at[request_id] = time.perf_counter()
            path = f"/api/v1/requests/{request_id}/encrypt-from-bundle"
            timed(traffic.stats, "approve", 202, person.api, "POST", path, body)


def reader_loop(traffic: Traffic) -> None:
    """List the bundles and read one, as the web UI does."""
    person = traffic.person.clone()
    with person.client:
        while not traffic.stop.is_set():
            timed(traffic.stats, "list bundles", 200, person.api, "GET", "/api/v1/bundles")
            path = f"/api/v1/bundles/{traffic.bundle_id}"
            timed(traffic.stats, "read bundle", 200, person.api, "GET", path)


def writer_loop(traffic: Traffic) -> None:
    """Create a library key and delete it again (the database does not grow)."""
    person = traffic.person.clone()
    with person.client:
        while not traffic.stop.is_set():
            name = f"SCRATCH_{secrets.token_hex(4)}"
            key = {"name": name, "value": "v" * 64}
            created = timed(traffic.stats, "create key", 201, person.api, "POST", KEYS, key)
            if created is not None:
                path = f"{KEYS}/{created.json()['id']}"
                timed(traffic.stats, "delete key", 204, person.api, "DELETE", path)


@dataclass
class Stack:
    """The processes under load."""

    settings: Settings
    redis: RedisServer
    procs: Processes
    bff_url: str
    bare_url: str


@contextmanager
def stack(directory: Path, web_workers: int) -> Iterator[Stack]:
    """A private redis-server, the api and bff under gunicorn, one worker process."""
    api_port, bff_port = free_port(), free_port()
    server = RedisServer(port=free_port(), directory=directory / "redis")
    server.start()
    try:
        settings = make_settings(
            f"sqlite:///{directory / 'envcat.db'}",
            f"{server.url}/0",
            f"{server.url}/1",
            api_base_url=f"http://127.0.0.1:{api_port}",
            public_url=f"http://127.0.0.1:{bff_port}",
            request_rate_limit="1000000/minute",
            worker_metrics_port=free_port(),
            log_level="WARNING",
        )
        migrate.upgrade(settings.database_url)
        env = server_environment(settings)
        with processes(directory / "logs") as procs:
            procs.start("worker", worker_argv("worker", ["approvals"]), env)
            api = procs.start_web("api", api_port, env, workers=web_workers, name="api")
            bff = procs.start_web("bff", bff_port, env, workers=web_workers, name="bff")
            wait_until_healthy(api)
            wait_until_healthy(bff)
            bare = start_bare_flask(procs, server.url, directory)
            yield Stack(settings, server, procs, bff, bare)
    finally:
        server.stop()


def memory(target: Stack) -> dict[str, int]:
    """Resident bytes of each process tree, and Redis's used_memory."""
    sizes = {
        name: sum(rss_bytes(pid) for pid in descendants(child.pid))
        for name, child in target.procs.children.items()
    }
    assert target.redis.process is not None
    sizes["redis-server (RSS)"] = rss_bytes(target.redis.process.pid)
    client = redis.Redis.from_url(f"{target.redis.url}/0")
    sizes["redis used_memory"] = int(client.info("memory")["used_memory"])
    client.close()
    return sizes


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(stats: Stats, seconds: float, warm: dict[str, int], end: dict[str, int]) -> float:
    """Print the figures; return the largest growth of a process after warm-up, in MB."""
    print(f"\n{'operation':<22}{'count':>8}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for op in sorted(set(stats.latencies) | set(stats.errors)):
        times = stats.latencies.get(op, [])
        p50 = percentile(times, 0.5) * 1000 if times else float("nan")
        p99 = percentile(times, 0.99) * 1000 if times else float("nan")
        print(
            f"{op:<22}{len(times):>8}{len(times) / seconds:>9.1f}{p50:>9.1f}{p99:>9.1f}"
            f"{stats.errors.get(op, 0):>8}"
        )
    print(f"\nerrors: {sum(stats.errors.values())}")
    for sample in stats.error_samples:
        print(f"  {sample}")
    print(f"\n{'memory (MB)':<22}{'warm':>9}{'end':>9}{'growth':>9}")
    for name in warm:
        growth = (end[name] - warm[name]) / MB
        print(f"{name:<22}{warm[name] / MB:>9.1f}{end[name] / MB:>9.1f}{growth:>+9.1f}")
    return max((end[n] - warm[n]) / MB for n in warm if not n.startswith("redis used"))


def run(options: argparse.Namespace, target: Stack) -> tuple[Stats, dict[str, int], dict[str, int]]:
    """Drive the traffic for `--seconds`; sample memory after warm-up and at the end."""
    person = BffSession.sign_up(
        target.bff_url, f"load-{secrets.token_hex(4)}@example.test", "load test password"
    )
    bundle_id = person.api("POST", "/api/v1/bundles", {"name": "load/bundle"}).json()["id"]
    for name, value in VALUES.items():
        person.api("POST", f"/api/v1/bundles/{bundle_id}/keys", {"name": name, "value": value})
    workspace = person.api("GET", "/api/v1/me").json()["tenant"]["slug"]
    traffic = Traffic(
        target.bff_url, target.bare_url, person, bundle_id, workspace, Stats(), threading.Event()
    )
    loops = [cli_loop] * options.clis + [approver_loop] * 2 + [reader_loop] * 2 + [writer_loop]
    threads = [threading.Thread(target=loop, args=(traffic,), daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    warm_up = max(5.0, options.seconds / 4)
    time.sleep(warm_up)
    warm = memory(target)
    time.sleep(options.seconds - warm_up)
    end = memory(target)
    traffic.stop.set()
    for thread in threads:
        thread.join(timeout=LONG_POLL_SECONDS + 30)
    person.client.close()
    return traffic.stats, warm, end


def main() -> int:
    """Run the load, print the figures; with --check, fail on errors or growth."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="duration (default 60)")
    parser.add_argument("--clis", type=int, default=8, help="concurrent CLIs (default 8)")
    parser.add_argument("--web-workers", type=int, default=1, help="gunicorn workers each")
    parser.add_argument("--growth-mb", type=float, default=8.0, help="allowed growth per process")
    parser.add_argument("--check", action="store_true", help="exit 1 on errors or growth")
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as directory,
        stack(Path(directory), options.web_workers) as target,
    ):
        started = time.perf_counter()
        stats, warm, end = run(options, target)
        elapsed = time.perf_counter() - started
    growth = report(stats, elapsed, warm, end)
    deliveries = len(stats.latencies.get("approval → delivery", []))
    print(f"\ndeliveries: {deliveries} in {elapsed:.0f} s ({deliveries / elapsed:.1f}/s)")
    if stats.latencies.get(CREATE) and stats.latencies.get(BARE_CREATE):
        ours = percentile(stats.latencies[CREATE], 0.5)
        floor = percentile(stats.latencies[BARE_CREATE], 0.5)
        print(
            f"create p50 {ours * 1000:.1f} ms vs bare Flask+Redis p50 {floor * 1000:.1f} ms "
            f"(same run): {ours / floor:.2f}x (target <= {CREATE_TARGET_RATIO}x)"
        )
    failed = sum(stats.errors.values()) > 0 or growth > options.growth_mb
    return 1 if options.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
