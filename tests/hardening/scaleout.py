"""The scale-out proof (issue #7): several copies of every process, one Redis, one PostgreSQL.

Two api processes and two bff processes (gunicorn, gevent; each bff forwards to
its own api), two `-Q approvals` workers and one `-Q provisioning,maintenance`
worker, on one private redis-server and one PostgreSQL database; the Celery
broker is that Redis or a RabbitMQ virtual host of our own. N CLIs each create a
request through one bff and wait for it through both bffs at once; N approvals
are fired together, alternating between the bffs. Every request must reach
exactly one of its two waiters (the other is told 410), with the values intact,
each approval task must run once, and a maintenance task must land on the third
worker only.

Used by bench/scaleout.py (figures) and tests/hardening/test_scaleout.py.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from celery import Celery
from nacl.public import PrivateKey

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.workers.factory import create_celery
from tests.hardening.flows import BffSession
from tests.hardening.processes import (
    Processes,
    processes,
    server_environment,
    wait_until_healthy,
    worker_argv,
    worker_metric,
)
from tests.support import free_port, private_redis
from tests.support.databases import migrated
from tests.support.envelopes import open_delivery
from tests.support.settings import make_settings

VALUES = {"SCALE_DATABASE_URL": "postgres://primary.internal/app", "SCALE_TOKEN": "tok-scale"}
ENCRYPT, SWEEP = "envcat.encrypt_from_bundle", "envcat.sweep_expired_requests"
RUNS = "envcat_task_duration_seconds_count"
WORKERS = {"approvals-1": ["approvals"], "approvals-2": ["approvals"]}
WORKERS["provisioning-maintenance"] = ["provisioning", "maintenance"]
WAIT_SECONDS = 20
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"


@dataclass(frozen=True)
class Asker:
    """A CLI's side of one request: its id, poll token and private key."""

    id: str
    poll_token: str
    private_key: PrivateKey


@dataclass
class Outcome:
    """What happened to one request: every waiter's final answer."""

    answers: list[str] = field(default_factory=list)  # "ready", "410", or an error text
    opened: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Result:
    """The figures of one scale-out run."""

    broker: str
    approvals: int
    delivered_once: int
    problems: list[str]
    seconds: float
    tasks_per_worker: dict[str, float]
    sweeps_per_worker: dict[str, float]

    @property
    def ok(self) -> bool:
        """Every request delivered exactly once, each task run once, routing respected."""
        return (
            not self.problems
            and self.delivered_once == self.approvals
            and sum(self.tasks_per_worker.values()) == self.approvals
            and self.sweeps_per_worker.get("provisioning-maintenance") == 1
            and sum(self.sweeps_per_worker.values()) == 1
        )


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ virtual host of our own (guest may use it), deleted afterwards."""
    name = f"envcat-scaleout-{secrets.token_hex(4)}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, timeout=60)
    try:
        permissions = ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest"]
        subprocess.run([*permissions, ".*", ".*", ".*"], check=True, timeout=60)
        yield f"{RABBITMQ}/{name}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], check=True, timeout=60)


@dataclass
class Cluster:
    """Two apis, two bffs (bff i forwards to api i), three workers."""

    settings: Settings
    procs: Processes
    bffs: list[str]
    metrics_ports: dict[str, int]

    def tasks(self, task: str) -> dict[str, float]:
        """How many times each worker ran `task`, from its own /metrics."""
        return {name: worker_metric(port, RUNS, task) for name, port in self.metrics_ports.items()}


@contextlib.contextmanager
def cluster(directory: Path, database_url: str, broker_url: str | None) -> Iterator[Cluster]:
    """Start every process; `broker_url` None means the Redis itself (db 1)."""
    with private_redis(directory / "redis") as redis, processes(directory / "logs") as procs:
        settings = make_settings(
            database_url,
            f"{redis.url}/0",
            broker_url or f"{redis.url}/1",
            request_rate_limit="100000/minute",
            max_pending_per_ip=100_000,  # every asker is on loopback
            log_level="WARNING",
        )
        migrated(database_url)
        base = server_environment(settings)
        ports = {name: free_port() for name in WORKERS}
        for name, queues in WORKERS.items():
            env = {**base, "WORKER_METRICS_PORT": str(ports[name])}
            procs.start(name, worker_argv(name, queues), env)
        bffs = []
        for index in (1, 2):
            api_port, bff_port = free_port(), free_port()
            api = procs.start_web("api", api_port, base, name=f"api-{index}")
            bff_env = {**base, "API_BASE_URL": api, "PUBLIC_URL": f"http://127.0.0.1:{bff_port}"}
            bffs.append(procs.start_web("bff", bff_port, bff_env, name=f"bff-{index}"))
            wait_until_healthy(api, timeout=90)
        for bff in bffs:
            wait_until_healthy(bff, timeout=90)
        yield Cluster(settings, procs, bffs, ports)


def _wait(bff: str, asker: Asker, outcome: Outcome, lock: threading.Lock) -> None:
    """Long-poll one request through one bff until it is final for this waiter."""
    with httpx.Client(base_url=bff, timeout=WAIT_SECONDS + 20) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            reply = client.get(
                f"/api/v1/requests/{asker.id}/wait",
                params={"timeout": WAIT_SECONDS},
                headers={"X-Poll-Token": asker.poll_token},
            )
            if reply.status_code == 200 and reply.json()["status"] == "pending":
                continue
            with lock:
                if reply.status_code == 410:
                    outcome.answers.append("410")
                elif reply.status_code == 200 and reply.json()["status"] == "ready":
                    outcome.answers.append("ready")
                    sealed = base64.b64decode(reply.json()["ciphertext_base64"])
                    outcome.opened.append(open_delivery(asker.private_key, sealed))
                else:
                    outcome.answers.append(f"HTTP {reply.status_code}: {reply.text[:200]}")
            return
        with lock:
            outcome.answers.append("timed out")


def _approve(session: BffSession, request_id: str, bundle_id: str, errors: list[str]) -> None:
    body = {"bundle_id": bundle_id, "include_keys": list(VALUES)}
    with session.client:
        reply = session.api("POST", f"/api/v1/requests/{request_id}/encrypt-from-bundle", body)
    if reply.status_code != 202:
        errors.append(f"approve HTTP {reply.status_code}: {reply.text[:200]}")


def _ask(bff: str, workspace: str) -> Asker:
    private_key = generate_keypair()
    reply = httpx.post(
        f"{bff}/api/v1/requests",
        json={"client_pubkey": encode_public_key(private_key), "workspace": workspace},
        timeout=30,
    )
    assert reply.status_code == 201, reply.text
    return Asker(reply.json()["id"], reply.json()["poll_token"], private_key)


def drive(target: Cluster, approvals: int, broker: str) -> Result:
    """Create, wait through both bffs, approve all at once; check what each waiter got."""
    email, password = f"scale-{secrets.token_hex(4)}@example.test", "scale-out password"
    sessions = [BffSession.sign_up(target.bffs[0], email, password)]
    sessions.append(BffSession.sign_in(target.bffs[1], email, password))
    reply = sessions[0].api("POST", "/api/v1/bundles", {"name": "scale/out"})
    bundle_id = reply.json()["id"]
    for name, value in VALUES.items():
        sessions[1].api("POST", f"/api/v1/bundles/{bundle_id}/keys", {"name": name, "value": value})
    workspace = sessions[0].api("GET", "/api/v1/me").json()["tenant"]["slug"]
    askers = [_ask(target.bffs[i % 2], workspace) for i in range(approvals)]
    outcomes = [Outcome() for _ in askers]
    lock, errors = threading.Lock(), list[str]()
    waiters = [
        threading.Thread(target=_wait, args=(bff, asker, outcome, lock))
        for asker, outcome in zip(askers, outcomes, strict=True)
        for bff in target.bffs
    ]
    for thread in waiters:
        thread.start()
    time.sleep(1.0)  # every waiter is inside its long poll
    started = time.perf_counter()
    approvers = [
        threading.Thread(
            target=_approve,
            args=(sessions[i % 2].clone(), asker.id, bundle_id, errors),
        )
        for i, asker in enumerate(askers)
    ]
    for thread in approvers:
        thread.start()
    for thread in approvers + waiters:
        thread.join(timeout=150)
    seconds = time.perf_counter() - started
    for session in sessions:
        session.client.close()
    return _result(target, broker, outcomes, errors, seconds)


def _result(
    target: Cluster, broker: str, outcomes: list[Outcome], errors: list[str], seconds: float
) -> Result:
    problems = list(errors)
    for number, outcome in enumerate(outcomes):
        if sorted(outcome.answers) != ["410", "ready"] or outcome.opened != [VALUES]:
            problems.append(f"request {number}: {outcome.answers}")
    delivered_once = sum(1 for o in outcomes if o.answers.count("ready") == 1)
    celery: Celery = create_celery(target.settings)
    try:
        celery.send_task(SWEEP)
        sweeps = target.tasks(SWEEP)
        deadline = time.monotonic() + 30
        while sum(sweeps.values()) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            sweeps = target.tasks(SWEEP)
    finally:
        celery.close()
    return Result(
        broker,
        len(outcomes),
        delivered_once,
        problems,
        seconds,
        target.tasks(ENCRYPT),
        sweeps,
    )
