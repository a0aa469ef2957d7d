"""Bursts (issue #22): N requests approved at once, through the bff, beside bare Celery floors.

For each database (SQLite, PostgreSQL) and each count of approval workers (1, 3):
a private redis-server (broker and request store), a fresh database, the api and
the bff as deployed (bench/stack.py), K `-Q approvals` workers (solo pool, as the
hardening tests run them). N requests are created through the bff and every one
is long-polled through the bff; once all polls are waiting, `--approvers` clients
approve all N through the bff's proxy (session + CSRF) as fast as they can.

Printed per run: deliveries per second (first approval sent to last delivery
received), p50 and p99 from an approval's send to its delivery, CPU seconds per
delivery of each process (api, bff, workers, redis-server, and on PostgreSQL the
server backends connected to the bench's own database, read from /proc), and
whether every request was
delivered exactly once with no 5xx and nothing expired. Beside them, measured in
the same run with the same K worker processes on the same Redis: a bare Celery
app's no-op throughput, and a bare Celery app doing one INSERT + COMMIT per task
on the same kind of database.

    python bench/burst.py [--requests 100] [--database sqlite|postgres|both] [--workers 1,3]

Exits 1 when a run is not exactly-once, saw a 5xx, or a request expired.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from nacl.public import PrivateKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stack as bench_stack  # noqa: E402
from baselines import BareCelery, _module  # noqa: E402

from envcat.core.sealing import encode_public_key, generate_keypair  # noqa: E402
from tests.hardening.databases import temporary_postgres  # noqa: E402
from tests.hardening.flows import BffSession  # noqa: E402
from tests.hardening.processes import worker_argv  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support.envelopes import open_delivery  # noqa: E402

VALUES = {f"BURST_KEY_{i}": f"burst-value-{i}-" + "x" * 24 for i in range(5)}
WAIT_SECONDS = 25

BARE_WORKER_MODULE = '''
"""Bare Celery floors: a no-op task, and one INSERT + COMMIT per task."""
import os
import sqlite3

import redis
from celery import Celery

app = Celery("bare", broker=os.environ["BARE_BROKER_URL"])
replies = redis.Redis.from_url(os.environ["BARE_REDIS_URL"])
DATABASE = os.environ.get("BARE_DATABASE", "")
_connection = None


def _db():
    global _connection
    if _connection is None:
        if DATABASE.startswith("postgresql"):
            import psycopg

            _connection = psycopg.connect(DATABASE.replace("postgresql+psycopg", "postgresql"))
        else:
            _connection = sqlite3.connect(DATABASE.removeprefix("sqlite:///"), timeout=30)
    return _connection


@app.task(name="bare.noop")
def noop(key):
    replies.lpush(key, "1")


@app.task(name="bare.insert")
def insert(key, row):
    connection = _db()
    connection.execute("INSERT INTO bare_rows (id) VALUES (%s)" if DATABASE.startswith(
        "postgresql") else "INSERT INTO bare_rows (id) VALUES (?)", (row,))
    connection.commit()
    replies.lpush(key, "1")
'''


@dataclass
class Asker:
    """One waiting CLI."""

    id: str
    poll_token: str
    private_key: PrivateKey
    approved_at: float = 0.0
    delivered_at: float = 0.0
    answers: list[str] = field(default_factory=list)


@dataclass
class Run:
    """What one (database, workers) burst measured."""

    database: str
    workers: int
    requests: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]
    problems: list[str]
    bare_noop_per_s: float
    bare_insert_per_s: float
    transactions: int = 0  # PostgreSQL: commits and rollbacks in the bench's database
    approving_seconds: float = 0.0  # first approval sent to last approval answered 202

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@contextmanager
def bare_workers(
    redis_url: str, database_url: str, directory: Path, count: int
) -> Iterator[BareCelery]:
    """`count` solo workers of the bare app on Redis database 2, with the run's database."""
    code = _module(directory / "bare-burst", "bare_burst", BARE_WORKER_MODULE)
    _create_bare_table(database_url)  # once, here: concurrent CREATEs race on PostgreSQL
    broker = f"{redis_url}/2"
    env = {**os.environ, "BARE_BROKER_URL": broker, "BARE_REDIS_URL": broker}
    env |= {"BARE_DATABASE": database_url, "PYTHONPATH": str(code)}
    children = []
    for number in range(count):
        argv = [sys.executable, "-m", "celery", "-A", "bare_burst", "worker", "--pool", "solo"]
        argv += ["-n", f"bare{number}@%h", "--without-gossip", "--without-mingle"]
        argv += ["--without-heartbeat", "--loglevel", "WARNING"]
        with open(directory / f"bare-{number}.log", "wb") as log:
            children.append(
                subprocess.Popen(argv, env=env, cwd=code, stdout=log, stderr=subprocess.STDOUT)
            )
    client = BareCelery(broker, broker)
    try:
        client.round_trip()
        yield client
    finally:
        client.close()
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _create_bare_table(database_url: str) -> None:
    if database_url.startswith("postgresql"):
        import psycopg

        url = database_url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS bare_rows (id TEXT PRIMARY KEY)")
        return
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS bare_rows (id TEXT PRIMARY KEY)")


def insert_burst(client: BareCelery, count: int) -> float:
    """Seconds for the bare workers to run `count` INSERT + COMMIT tasks sent back to back."""
    key = f"bare:insert:{uuid.uuid4().hex}"
    started = time.perf_counter()
    with client.app.producer_or_acquire() as producer:
        for _ in range(count):
            row = uuid.uuid4().hex
            client.app.send_task("bare.insert", args=[key, row], producer=producer)
    for _ in range(count):
        if client.blocking.blpop([key], timeout=120) is None:
            raise RuntimeError("the bare workers stopped answering")
    return time.perf_counter() - started


def postgres_backends(database_url: str) -> list[int]:
    """Pids of the PostgreSQL backends connected to the bench's database (not this probe)."""
    import psycopg

    url = database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


STATS_FLUSH_SECONDS = 11  # an idle backend reports its counts within 10 s (PostgreSQL 15)


def transactions(database_url: str) -> int:
    """Commits and rollbacks so far in the bench's database (pg_stat_database), this
    probe's own included (subtract two readings: one probe each). Waits until every
    backend has reported what it did before."""
    import psycopg

    time.sleep(STATS_FLUSH_SECONDS)
    url = database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def backend_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each backend so far (a backend gone meanwhile reads as 0)."""
    return {pid: bench_stack.cpu_seconds(pid) for pid in pids}


def ask(bff: str, workspace: str) -> Asker:
    """Create one request through the bff, as `envcat get` does."""
    private_key = generate_keypair()
    body = {"client_pubkey": encode_public_key(private_key), "workspace": workspace}
    reply = httpx.post(f"{bff}/api/v1/requests", json=body, timeout=60)
    reply.raise_for_status()
    return Asker(reply.json()["id"], reply.json()["poll_token"], private_key)


async def wait_all(bff: str, askers: list[Asker], started: threading.Event) -> None:
    """Long-poll every request at once until each is final."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=bff, timeout=WAIT_SECONDS + 30, limits=limits) as client:

        async def one(asker: Asker) -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    reply = await client.get(
                        f"/api/v1/requests/{asker.id}/wait",
                        params={"timeout": WAIT_SECONDS},
                        headers={"X-Poll-Token": asker.poll_token},
                    )
                except httpx.HTTPError as exc:
                    asker.answers.append(type(exc).__name__)
                    return
                body = reply.json() if reply.status_code == 200 else {}
                if body.get("status") == "pending":
                    continue
                asker.delivered_at = time.perf_counter()
                if body.get("status") == "ready":
                    values = open_delivery(asker.private_key, body["ciphertext_base64"])
                    asker.answers.append("ready" if values == VALUES else "wrong values")
                else:
                    asker.answers.append(f"HTTP {reply.status_code} {reply.text[:120]}")
                return
            asker.answers.append("timed out")

        tasks = [asyncio.create_task(one(asker)) for asker in askers]
        await asyncio.sleep(1.0)  # every poll is inside the bff by now
        started.set()
        await asyncio.gather(*tasks)


def approve_all(
    session: BffSession, askers: list[Asker], bundle_id: str, approvers: int
) -> list[str]:
    """Approve every request through the bff's proxy, `approvers` clients at once."""
    body = {"bundle_id": bundle_id, "include_keys": list(VALUES)}
    clones = [session.clone() for _ in range(approvers)]
    errors: list[str] = []

    def work(index: int) -> None:
        person = clones[index]
        for asker in askers[index::approvers]:
            asker.approved_at = time.perf_counter()
            path = f"/api/v1/requests/{asker.id}/encrypt-from-bundle"
            reply = person.api("POST", path, body)
            if reply.status_code != 202:
                errors.append(f"approve HTTP {reply.status_code}: {reply.text[:120]}")

    with ThreadPoolExecutor(approvers) as pool:
        list(pool.map(work, range(approvers)))
    for person in clones:
        person.client.close()
    return errors


def burst(database: str, workers: int, count: int, approvers: int) -> Run:
    """One burst: start everything, measure the floors, then EnvCat."""
    with ExitStack() as exits:
        directory = Path(exits.enter_context(tempfile.TemporaryDirectory()))
        database_url = (
            exits.enter_context(temporary_postgres())
            if database == "postgres"
            else f"sqlite:///{directory / 'envcat.db'}"
        )
        running = exits.enter_context(
            bench_stack.stack(directory, database_url=database_url, request_ttl=600)
        )
        for number in range(workers):
            env = running.env(WORKER_METRICS_PORT=str(free_port()))
            argv = worker_argv(f"a{number}", ["approvals"])
            running.group.start(f"approvals-{number}", argv, env)

        bare_db = f"sqlite:///{directory / 'bare.db'}" if database == "sqlite" else database_url
        with bare_workers(running.redis_url, bare_db, directory, workers) as bare:
            bare.burst(min(count, 50))  # warm
            noop_rate = count / bare.burst(count)
            insert_burst(bare, min(count, 50))
            insert_rate = count / insert_burst(bare, count)

        person = BffSession.sign_up(
            running.bff, f"burst-{secrets.token_hex(4)}@example.test", "burst bench password"
        )
        bundle_id = person.api("POST", "/api/v1/bundles", {"name": "burst/app"}).json()["id"]
        for name, value in VALUES.items():
            person.api("POST", f"/api/v1/bundles/{bundle_id}/keys", {"name": name, "value": value})
        workspace = person.api("GET", "/api/v1/me").json()["tenant"]["slug"]
        # A few deliveries first, so no process pays its start-up inside the burst.
        warm = [ask(running.bff, workspace) for _ in range(workers * 2)]
        polled = threading.Event()
        waiting = threading.Thread(target=asyncio.run, args=(wait_all(running.bff, warm, polled),))
        waiting.start()
        polled.wait(60)
        approve_all(person, warm, bundle_id, min(approvers, len(warm)))
        waiting.join(120)

        with ThreadPoolExecutor(16) as pool:
            askers = list(pool.map(lambda _: ask(running.bff, workspace), range(count)))
        units_before = transactions(database_url) if database == "postgres" else 0
        pids = {name: child.pid for name, child in running.group.children.items()}
        pids["redis-server"] = running.redis_pid
        before = {name: bench_stack.cpu_seconds(pid) for name, pid in pids.items()}
        pooled = postgres_backends(database_url) if database == "postgres" else []
        database_before = backend_cpu(pooled)
        polled = threading.Event()
        waiting = threading.Thread(
            target=asyncio.run, args=(wait_all(running.bff, askers, polled),)
        )
        waiting.start()
        polled.wait(120)
        errors = approve_all(person, askers, bundle_id, approvers)
        waiting.join(WAIT_SECONDS * 12)
        cpu = {name: bench_stack.cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        if database == "postgres":  # backends opened during the burst started from zero
            after = backend_cpu(postgres_backends(database_url))
            cpu["postgres backends"] = sum(
                seconds - database_before.get(pid, 0.0) for pid, seconds in after.items()
            )
            # the probes between the two readings: postgres_backends twice, this one once
            units = transactions(database_url) - units_before - 3
        else:
            units = 0
        person.client.close()

    problems = list(errors)
    for number, asker in enumerate(askers):
        if asker.answers != ["ready"]:
            problems.append(f"request {number}: {asker.answers}")
    first = min(asker.approved_at for asker in askers)
    last = max(asker.delivered_at for asker in askers)
    latencies = [a.delivered_at - a.approved_at for a in askers if a.answers == ["ready"]]
    return Run(
        database,
        workers,
        count,
        last - first,
        latencies,
        cpu,
        problems,
        noop_rate,
        insert_rate,
        units,
        max(asker.approved_at for asker in askers) - first,
    )


def show(run: Run) -> None:
    """Print one run's figures beside its floors."""
    print(f"\n{run.database}, {run.workers} approval worker(s), {run.requests} requests")
    print(f"  {bench_stack.machine_load()}")
    print(
        f"  deliveries/s {run.rate:8.1f}   bare Celery no-op {run.bare_noop_per_s:8.1f}/s"
        f"   bare Celery INSERT+COMMIT {run.bare_insert_per_s:8.1f}/s"
        f"   ratio to INSERT floor {run.rate / run.bare_insert_per_s:5.2f}x (target >= 0.25x)"
    )
    p50 = bench_stack.percentile(run.latencies, 50) * 1000
    p99 = bench_stack.percentile(run.latencies, 99) * 1000
    print(f"  approval -> delivery p50 {p50:8.1f} ms   p99 {p99:8.1f} ms")
    print(
        f"  every approval sent within {run.approving_seconds:.1f} s of the first"
        f" (first approval to last delivery: {run.seconds:.1f} s)"
    )
    per = {name: seconds / run.requests * 1000 for name, seconds in run.cpu.items()}
    shown = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(per.items()))
    print(f"  CPU ms per delivery: {shown}")
    if run.transactions:
        per = run.transactions / run.requests
        print(f"  database transactions per delivery: {per:.2f} (commits and rollbacks)")
    delivered = run.requests - sum(1 for p in run.problems if p.startswith("request"))
    print(f"  delivered exactly once: {delivered}/{run.requests}")
    for problem in run.problems[:10]:
        print(f"  problem: {problem}")


def main() -> int:
    """Run every (database, workers) pair; exit 1 unless each was exactly-once and clean."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="N (default 100)")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--workers", default="1,3", help="approval worker counts (default 1,3)")
    parser.add_argument("--approvers", type=int, default=16, help="concurrent approvers")
    options = parser.parse_args()
    databases = ["sqlite", "postgres"] if options.database == "both" else [options.database]
    counts = [int(number) for number in options.workers.split(",")]
    runs = []
    for database in databases:
        for workers in counts:
            run = burst(database, workers, options.requests, options.approvers)
            show(run)
            runs.append(run)
        by_workers = {run.workers: run.rate for run in runs if run.database == database}
        if len(by_workers) > 1:
            low, high = min(by_workers), max(by_workers)
            scale = by_workers[high] / by_workers[low]
            print(f"\n{database}: {high} workers deliver {scale:.2f}x of {low} (target >= 1.8x)")
    return 1 if any(run.problems for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
