"""N concurrent long-polling CLIs held by the api under gunicorn -k gevent, as deployed.

Starts its own private redis-server and the api with the production settings file
(`gunicorn -c envcat/api/gunicorn.conf.py`, gevent workers) on loopback, creates N
requests, then holds N `GET /requests/{id}/wait?timeout=HOLD` polls open at once.
Reports errors (target 0), how long the polls were held against HOLD (ratio ≈ 1:
nobody is turned away or answered early), the RSS of the api processes idle and
under load, and Redis's connected clients at the peak.

    python bench/waiters.py [--n 2000] [--hold 8] [--ramp 2] [--workers 2]
                            [--worker-connections 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs installed
import redis

from envcat.core.keys import new_kms_key, new_shared_secret
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import migrate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import RedisServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "envcat" / "api" / "gunicorn.conf.py"
CREATE_CONCURRENCY = 64


@dataclass
class Load:
    """What the polls saw and what the server used meanwhile."""

    idle_rss: dict[int, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[int, int] = field(default_factory=dict)
    peak_redis_clients: int = 0
    wall: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def _raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _environment(directory: Path, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{directory / 'envcat.db'}",
        "REDIS_URL": f"{redis_url}/0",
        "CELERY_BROKER_URL": f"{redis_url}/1",
        "BUNDLE_KMS_KEY": new_kms_key(),
        "BFF_SHARED_SECRET": new_shared_secret(),
        "REQUEST_RATE_LIMIT": "10000000/minute",
        "LOG_LEVEL": "WARNING",
    }


@contextmanager
def _gunicorn(
    env: dict[str, str], port: int, options: argparse.Namespace, log: Path
) -> Iterator[psutil.Process]:
    argv = [str(Path(sys.executable).with_name("gunicorn")), "-c", str(GUNICORN_CONF)]
    argv += ["-b", f"127.0.0.1:{port}", "-w", str(options.workers)]
    argv += [
        "--worker-connections",
        str(options.worker_connections),
        "--access-logfile",
        "/dev/null",
    ]
    argv += ["envcat.api.wsgi:app"]
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, env=env, stdout=sink, stderr=sink, cwd=ROOT)
        try:
            wait_for_port(port, timeout=30)
            yield psutil.Process(child.pid)
        finally:
            child.terminate()
            child.wait(timeout=60)


def _rss(master: psutil.Process) -> dict[int, int]:
    processes = [master, *master.children(recursive=True)]
    return {p.pid: p.memory_info().rss for p in processes if p.is_running()}


async def _create(client: httpx.AsyncClient, n: int) -> list[tuple[str, str]]:
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one() -> tuple[str, str]:
        async with gate:
            pub = encode_public_key(generate_keypair())
            reply = await client.post("/api/v1/requests", json={"client_pubkey": pub})
            reply.raise_for_status()
            body = reply.json()
            return body["id"], body["poll_token"]

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _raw_get(host: str, port: int, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on its own connection: a client as light as a waiting CLI's socket.

    (httpx's pool is quadratic in open connections and would be the bottleneck here.)
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def _hold(
    base: tuple[str, int], request_id: str, token: str, hold: int, delay: float, load: Load
) -> None:
    await asyncio.sleep(delay)  # clients arrive over the ramp, not in one instant
    started = time.perf_counter()
    target = f"/api/v1/requests/{request_id}/wait?timeout={hold}"
    try:
        status, body = await asyncio.wait_for(
            _raw_get(*base, target, {"X-Poll-Token": token}), timeout=hold + 60
        )
    except (OSError, TimeoutError, IndexError, ValueError) as exc:
        load.error(type(exc).__name__)
        return
    if status != 200 or json.loads(body) != {"status": "pending"}:
        load.error(f"HTTP {status}")
        return
    load.durations.append(time.perf_counter() - started)


async def _sample(master: psutil.Process, r: redis.Redis, load: Load, done: asyncio.Event) -> None:
    while not done.is_set():
        for pid, rss in _rss(master).items():
            load.peak_rss[pid] = max(load.peak_rss.get(pid, 0), rss)
        clients = int(r.info("clients")["connected_clients"])
        load.peak_redis_clients = max(load.peak_redis_clients, clients)
        await asyncio.sleep(0.25)


async def _measure(
    port: int, master: psutil.Process, r: redis.Redis, options: argparse.Namespace
) -> Load:
    load = Load()
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        requests = await _create(client, options.n)  # also loads the app in every worker
    load.idle_rss = _rss(master)
    done = asyncio.Event()
    sampler = asyncio.create_task(_sample(master, r, load, done))
    started = time.perf_counter()
    base = ("127.0.0.1", port)
    step = options.ramp / max(1, options.n)
    await asyncio.gather(
        *(
            _hold(base, rid, token, options.hold, i * step, load)
            for i, (rid, token) in enumerate(requests)
        )
    )
    load.wall = time.perf_counter() - started
    done.set()
    await sampler
    return load


def _report(options: argparse.Namespace, load: Load) -> None:
    mib = 1024 * 1024
    print(
        f"waiters: {options.n} (connecting over {options.ramp:g} s)   hold: {options.hold} s   "
        f"gunicorn -k gevent -w {options.workers} --worker-connections {options.worker_connections}"
    )
    print(f"errors: {sum(load.errors.values())} {load.errors or ''}")
    if load.durations:
        median = statistics.median(load.durations)
        print(
            f"poll held: min {min(load.durations):.2f} s  median {median:.2f} s  "
            f"max {max(load.durations):.2f} s  (median / hold = {median / options.hold:.2f})"
        )
    print(
        f"all polls done in {load.wall:.2f} s"
        f" ({load.wall / (options.hold + options.ramp):.2f}x ramp + hold)"
    )
    for pid in sorted(load.idle_rss):
        idle, peak = load.idle_rss[pid], load.peak_rss.get(pid, load.idle_rss[pid])
        print(f"  api process {pid}: RSS idle {idle / mib:6.1f} MiB, holding {peak / mib:6.1f} MiB")
    total_idle, total_peak = sum(load.idle_rss.values()), sum(load.peak_rss.values())
    per_waiter = (total_peak - total_idle) / options.n / 1024
    print(
        f"api RSS total: idle {total_idle / mib:.1f} MiB, holding {total_peak / mib:.1f} MiB"
        f" (ratio {total_peak / total_idle:.2f}; {per_waiter:.1f} KiB per waiter)"
    )
    print(f"Redis connected clients at peak: {load.peak_redis_clients}")


def main() -> int:
    """Run the load once and print the figures; exit 1 when any poll failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="concurrent waiters (default 2000)")
    parser.add_argument("--hold", type=int, default=8, help="seconds each poll waits (default 8)")
    parser.add_argument(
        "--ramp", type=float, default=2.0, help="seconds over which the clients connect (default 2)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--worker-connections", type=int, default=5000)
    options = parser.parse_args()
    _raise_open_file_limit()
    with tempfile.TemporaryDirectory(prefix="envcat-waiters-") as tmp:
        directory = Path(tmp)
        server = RedisServer(port=free_port(), directory=directory / "redis")
        server.start()
        try:
            env = _environment(directory, server.url)
            migrate.upgrade(env["DATABASE_URL"])
            port = free_port()
            r = redis.Redis.from_url(server.url)
            log = directory / "gunicorn.log"
            with _gunicorn(env, port, options, log) as master:
                load = asyncio.run(_measure(port, master, r, options))
            r.close()
            if load.errors:  # the api's own account of what went wrong
                print(*log.read_text(errors="replace").splitlines()[-20:], sep="\n")
        finally:
            server.stop()
    _report(options, load)
    return 1 if load.errors else 0


if __name__ == "__main__":
    sys.exit(main())
