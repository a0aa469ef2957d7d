"""Redis commands per request lifecycle, counted with MONITOR, by phase and by database.

Runs the same in-process api, real solo worker and private Redis as
`bench/approval_latency.py`, with a MONITOR connection recording every command,
then times N full cycles and attributes each command to the phase whose wall-clock
window it fell in:

- create: `POST /requests`;
- wait: the CLI's `wait?timeout=25` until it waits for a wake-up (its take claimed the
  request); the bench's own probe for that is not counted;
- approve: the approver's signed `encrypt-from-bundle` call, until its 202;
- deliver: from the 202 to the long poll's answer (Celery hop, the worker's task,
  the wake-up, the take).

Database 0 holds EnvCat's data, database 1 is the Celery broker. MONITOR shows
every command of a pipeline or a transaction separately and the commands a Lua
script runs (as `lua` lines, counted apart in "inside Lua"). A MULTI..EXEC block is
one round trip but shows as MULTI, its commands and EXEC; a pipeline without
MULTI shows its commands one by one.

    python bench/redis_trips.py [--n 20]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import approval_latency as latency

from envcat.api import create_app
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import db, migrate
from tests.support import RedisServer, free_port
from tests.support.signed import add_member

LINE = re.compile(r'^(\d+\.\d+) \[(\d+) ([^\]]+)\] "([A-Za-z]+)"')
PHASES = ("create", "wait", "approve", "deliver")


class Monitor(threading.Thread):
    """Collects (time, db, client, command) for every command Redis runs."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=None)
        self.seen: list[tuple[float, str, str, str]] = []
        self.stopping = False

    def run(self) -> None:
        with self.client.monitor() as monitor:
            for event in monitor.listen():
                if self.stopping:
                    return
                kind = "lua" if event.get("client_type") == "lua" else str(event["db"])
                command = str(event["command"]).split(" ", 1)[0].upper()
                client = f"{event.get('client_address')}:{event.get('client_port')}"
                self.seen.append((float(event["time"]), kind, client, command))


def _cycle(bench: latency.Bench) -> dict[str, tuple[float, float]]:
    """One create -> wait -> approve -> deliver cycle; the wall-clock window of each phase."""
    windows: dict[str, tuple[float, float]] = {}
    started = time.time()
    pub = encode_public_key(generate_keypair())
    body = {"client_pubkey": pub, "workspace": latency.TENANT}
    created = bench.client.post("/api/v1/requests", json=body).get_json()
    windows["create"] = (started, time.time())
    arrived: list[Any] = []

    def long_poll() -> None:
        reply = bench.app.test_client().get(
            f"/api/v1/requests/{created['id']}/wait?timeout=25",
            headers={"X-Poll-Token": created["poll_token"]},
        )
        arrived.append((time.time(), reply.get_json()))
        reply.close()  # as a server does once the reply is sent (the delivery's audit)

    mark = time.time()
    poller = threading.Thread(target=long_poll)
    poller.start()
    bench.wait_until_waiting(created["id"])
    windows["wait"] = (mark, time.time())
    mark = time.time()
    names = [key.name for key in latency.BUNDLE_KEYS]
    approve = f"/api/v1/requests/{created['id']}/encrypt-from-bundle"
    response = bench._signed_post(approve, {"bundle_id": bench.bundle_id, "include_keys": names})
    if response.status_code != 202:
        raise RuntimeError(f"approval refused: {response.get_json()}")
    windows["approve"] = (mark, time.time())
    poller.join(timeout=30)
    windows["deliver"] = (windows["approve"][1], arrived[0][0] + 0.002)
    if arrived[0][1].get("status") != "ready":
        raise RuntimeError(f"the long poll ended with {arrived[0][1]}")
    time.sleep(0.05)  # let the worker's acknowledgement land in this cycle's window
    return windows


def count(n: int) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """Return per phase: commands by database, and by command name (over n cycles)."""
    with tempfile.TemporaryDirectory(prefix="envcat-trips-") as tmp:
        directory = Path(tmp)
        server = RedisServer(port=free_port(), directory=directory / "redis")
        server.start()
        try:
            settings = latency._settings(directory, server.url)
            migrate.upgrade(settings.database_url)
            app = create_app(settings)
            with app.app_context():
                add_member(latency.USER, latency.TENANT)
                bundle_id = latency.seed_bundle(latency.TENANT, "bench/api", latency.BUNDLE_KEYS)
                db.session.commit()
                with latency._worker(settings, directory / "worker.log"):
                    bench = latency.Bench(app, settings, bundle_id, None)  # type: ignore[arg-type]
                    bench.ping_round_trip()
                    _cycle(bench)  # warm-up: scripts loaded, connections open
                    probe = str(bench.redis.client_info()["addr"])  # its commands are not the app's
                    monitor = Monitor(server.url)
                    monitor.start()
                    time.sleep(0.3)
                    windows = [_cycle(bench) for _ in range(n)]
                    monitor.stopping = True
                    bench.redis.ping()  # wakes the listener so it can stop
        finally:
            server.stop()
    by_db: dict[str, Counter[str]] = defaultdict(Counter)
    by_name: dict[str, Counter[str]] = defaultdict(Counter)
    for at, kind, client, command in monitor.seen:
        if client == probe:
            continue
        phase = next(
            (p for w in windows for p in PHASES if w[p][0] <= at <= w[p][1]),
            None,
        )
        if phase is None or command == "MONITOR":
            continue
        by_db[phase][kind] += 1
        if kind != "lua":
            by_name[phase][command] += 1
    return by_db, by_name


def main() -> int:
    """Print commands per cycle by phase."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="cycles to count (default 20)")
    options = parser.parse_args()
    by_db, by_name = count(options.n)
    n = options.n
    print(f"Redis commands per request lifecycle (mean of {n}; MONITOR)")
    print(f"{'phase':8} {'db0 app':>8} {'db1 broker':>10} {'inside Lua':>10}   commands (db0+db1)")
    for phase in PHASES:
        dbs = by_db[phase]
        names = ", ".join(
            f"{name} {count / n:.1f}"
            for name, count in by_name[phase].most_common()
            if count >= n / 2
        )
        print(
            f"{phase:8} {dbs['0'] / n:8.1f} {dbs['1'] / n:10.1f} {dbs['lua'] / n:10.1f}   {names}"
        )
    total = {k: sum(by_db[p][k] for p in PHASES) / n for k in ("0", "1", "lua")}
    print(f"{'total':8} {total['0']:8.1f} {total['1']:10.1f} {total['lua']:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
