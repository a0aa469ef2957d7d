"""The bare floors of issue #14, for the benches to measure in the same run as their figure.

- **Bare Celery no-op round trip**: a standalone Celery app with default settings
  (nothing of EnvCat's: no signals, no app context, no metrics), a solo worker
  subprocess on the same private Redis; the client `send_task`s, the task LPUSHes a
  key, the client BLPOPs it. `BareCelery.round_trip()` times one.
- **Bare Flask+Redis app**: a tiny Flask app doing one Redis `HSET` + `EXPIRE` (one
  pipelined round trip) per POST, served by the bff's gunicorn settings (gevent, 2
  workers); `bare_flask()` runs it, `stack.closed_loop()` loads it.

Run alone it prints both floors:

    python bench/baselines.py [--n 200] [--seconds 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import WORKSPACE, bff_argv, closed_loop, percentile

from tests.hardening.processes import Processes, processes, wait_until_healthy
from tests.support import RedisServer, free_port

WARMUP = 10

BARE_CELERY_MODULE = '''
"""A standalone Celery app with default settings: the floor of one task-queue hop."""
import os

import redis
from celery import Celery

app = Celery("bare", broker=os.environ["BARE_BROKER_URL"])
replies = redis.Redis.from_url(os.environ["BARE_REDIS_URL"])


@app.task(name="bare.noop")
def noop(key):
    replies.lpush(key, "1")
'''

BARE_FLASK_MODULE = '''
"""A tiny Flask app doing one Redis HSET + EXPIRE per POST: the floor of a create."""
import os
import secrets

import redis
from flask import Flask, jsonify, request

app = Flask(__name__)
store = redis.Redis.from_url(os.environ["BARE_REDIS_URL"], max_connections=1000)


@app.post("/api/v1/requests")
def create():
    body = request.get_json()
    request_id = secrets.token_urlsafe(16)
    pipe = store.pipeline(transaction=True)
    pipe.hset(f"bare:{request_id}", mapping={"pub": body["client_pubkey"], "status": "pending"})
    pipe.expire(f"bare:{request_id}", 300)
    pipe.execute()
    return jsonify(id=request_id), 201


@app.get("/healthz")
def healthz():
    return "ok"
'''


def _module(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(text)
    return directory


class BareCelery:
    """A client of the bare Celery app: publish `bare.noop`, BLPOP its reply."""

    def __init__(self, broker_url: str, redis_url: str) -> None:
        from celery import Celery

        # Not the current app: the api in the same process enqueues through its own.
        self.app = Celery("bare-client", broker=broker_url, set_as_current=False)
        self.blocking = redis.Redis.from_url(redis_url, socket_timeout=None)

    def round_trip(self) -> float:
        """Seconds from `send_task` to the task's LPUSH arriving."""
        key = f"bare:reply:{uuid.uuid4().hex}"
        started = time.perf_counter()
        self.app.send_task("bare.noop", args=[key])
        if self.blocking.blpop([key], timeout=30) is None:
            raise RuntimeError("the bare Celery worker did not answer")
        return time.perf_counter() - started

    def burst(self, count: int) -> float:
        """Seconds for the bare worker to run `count` no-op tasks sent back to back."""
        key = f"bare:burst:{uuid.uuid4().hex}"
        started = time.perf_counter()
        with self.app.producer_or_acquire() as producer:
            for _ in range(count):
                self.app.send_task("bare.noop", args=[key], producer=producer)
        for _ in range(count):
            if self.blocking.blpop([key], timeout=60) is None:
                raise RuntimeError("the bare Celery worker stopped answering")
        return time.perf_counter() - started

    def close(self) -> None:
        self.blocking.close()
        self.app.close()


@contextmanager
def bare_celery(redis_url: str, directory: Path, *, db: int = 2) -> Iterator[BareCelery]:
    """Run the bare app's solo worker on `redis_url` (broker on database `db`)."""
    code = _module(directory / "bare-celery", "bare_celery", BARE_CELERY_MODULE)
    broker, replies = f"{redis_url}/{db}", f"{redis_url}/{db}"
    env = {**os.environ, "BARE_BROKER_URL": broker, "BARE_REDIS_URL": replies}
    env["PYTHONPATH"] = str(code)
    # The same worker flags the benches give EnvCat's own worker.
    argv = [sys.executable, "-m", "celery", "-A", "bare_celery", "worker", "--pool", "solo"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
    with open(directory / "bare-celery.log", "wb") as log:
        child = subprocess.Popen(argv, env=env, cwd=code, stdout=log, stderr=subprocess.STDOUT)
    client = BareCelery(broker, replies)
    try:
        client.round_trip()  # waits for the worker to be up
        yield client
    finally:
        client.close()
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def start_bare_flask(group: Processes, redis_url: str, directory: Path, name: str = "bare") -> str:
    """Start the bare Flask+Redis app under the bff's gunicorn settings; return its URL."""
    code = _module(directory / "bare-flask", "bare_flask", BARE_FLASK_MODULE)
    port = free_port()
    env = {**os.environ, "BARE_REDIS_URL": f"{redis_url}/3", "PYTHONPATH": str(code)}
    group.start(name, [*bff_argv(port, "bare_flask:app"), f"--chdir={code}"], env)
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url)
    return url


def create_body(pubkeys: list[str]) -> object:
    """A body factory for `closed_loop`: a create request with one of `pubkeys`."""
    encoded = [
        json.dumps({"client_pubkey": pub, "workspace": WORKSPACE}).encode() for pub in pubkeys
    ]
    return lambda i: encoded[i % len(encoded)]


def main() -> int:
    """Measure both floors on a private Redis and print them."""
    from envcat.core.sealing import encode_public_key, generate_keypair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="Celery round trips (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envcat-baselines-") as tmp:
        directory = Path(tmp)
        server = RedisServer(port=free_port(), directory=directory / "redis")
        server.start()
        try:
            with bare_celery(server.url, directory) as celery:
                for _ in range(WARMUP):
                    celery.round_trip()
                trips = [celery.round_trip() for _ in range(options.n)]
            with processes(directory / "logs") as group:
                url = start_bare_flask(group, server.url, directory)
                pubs = [encode_public_key(generate_keypair()) for _ in range(64)]
                load = closed_loop(
                    url,
                    "/api/v1/requests",
                    create_body(pubs),  # type: ignore[arg-type]
                    clients=options.clients,
                    seconds=options.seconds,
                )
        finally:
            server.stop()
    print(
        f"bare Celery no-op round trip   p50 {percentile(trips, 50) * 1000:6.2f} ms"
        f"   p99 {percentile(trips, 99) * 1000:6.2f} ms   (n={len(trips)})"
    )
    print(
        f"bare Flask+Redis create        {load.rate:7.1f} req/s   p50 {load.p50 * 1000:6.2f} ms"
        f"   ({options.clients} clients, {options.seconds:g} s, errors {load.errors or 0})"
    )
    return 1 if load.errors else 0


if __name__ == "__main__":
    sys.exit(main())
