"""What the bff costs in front of the api, and whether long polls block anyone, as ratios.

Starts its own private redis-server and the api and the bff from their gunicorn
settings files (gevent, as deployed; bench/stack.py) on a fresh SQLite database, then measures:

1. the median time of `GET /api/v1/requests/<id>/context` straight to the api
   (baseline) and through the bff: the proxy's cost, as a ratio;
2. W concurrent long polls (`wait?timeout=T`) held through the bff: the
   wall time until all return, as a ratio of T (1.0 = none waited for another);
3. the median time of the bff's `/healthz` while those W polls are held, as a
   ratio of the same when idle (near 1 = waiting CLIs do not slow anyone down).

    python bench/bff_proxy.py [--calls 300] [--waiters 200] [--hold 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from envcat.core.sealing import encode_public_key, generate_keypair

# The private redis-server helper lives with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import WORKSPACE
from stack import stack as running_stack

BIN = Path(sys.executable).parent


def _median_get(client: httpx.Client, url: str, calls: int) -> float:
    client.get(url)  # warm the connection
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        client.get(url).raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _create_requests(bff: str, count: int) -> list[dict[str, str]]:
    with httpx.Client(base_url=bff, timeout=30) as client:
        return [
            client.post(
                "/api/v1/requests",
                json={
                    "client_pubkey": encode_public_key(generate_keypair()),
                    "workspace": WORKSPACE,
                },
            ).json()
            for _ in range(count)
        ]


def _hold_polls(
    client: httpx.Client, base: str, requests: list[dict[str, str]], hold: int
) -> tuple[float, list[str], list[threading.Thread]]:
    """Start one thread per long poll; return the start time, the statuses list, the threads."""
    statuses: list[str] = []
    lock = threading.Lock()

    def wait(request: dict[str, str]) -> None:
        reply = client.get(
            f"{base}/api/v1/requests/{request['id']}/wait",
            params={"timeout": hold},
            headers={"X-Poll-Token": request["poll_token"]},
        )
        with lock:
            statuses.append(reply.json().get("status", str(reply.status_code)))

    threads = [threading.Thread(target=wait, args=(r,)) for r in requests]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    return started, statuses, threads


def measure(calls: int, waiters: int, hold: int) -> dict[str, float]:
    """Run the stack and return the raw figures (seconds)."""
    # The api and the bff as deployed (bench/stack.py), with a seeded workspace.
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp)) as running:
        workdir = running.directory / "logs"
        api, bff = running.api, running.bff
        probe = _create_requests(bff, 1)[0]
        path = f"/api/v1/requests/{probe['id']}/context"
        # One client shared by every thread: a client per thread would spend the run
        # building TLS contexts.
        limits = httpx.Limits(max_connections=waiters + 10)
        with httpx.Client(timeout=hold + 30, limits=limits) as client:
            direct = _median_get(client, api + path, calls)
            proxied = _median_get(client, bff + path, calls)
            idle = _median_get(client, f"{bff}/healthz", calls)
            baseline = _create_requests(bff, waiters)
            started, statuses, threads = _hold_polls(client, api, baseline, hold)
            for thread in threads:
                thread.join()
            held_direct = time.perf_counter() - started
            requests = _create_requests(bff, waiters)
            started, more, threads = _hold_polls(client, bff, requests, hold)
            time.sleep(min(1.0, hold / 3))
            busy = _median_get(client, f"{bff}/healthz", min(calls, 50))
            for thread in threads:
                thread.join()
            held = time.perf_counter() - started
        statuses += more
        if statuses.count("pending") != 2 * waiters:
            log = (workdir / "bff.log").read_text()[-3000:] + (workdir / "api.log").read_text()[
                -3000:
            ]  # the Processes group's logs
            raise SystemExit(f"long polls failed: {sorted(set(statuses))}\n{log}")
        return {
            "direct": direct,
            "proxied": proxied,
            "idle": idle,
            "busy": busy,
            "held": held,
            "held_direct": held_direct,
        }


def main() -> int:
    """Print the figures and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="sequential calls per median")
    parser.add_argument("--waiters", type=int, default=200, help="concurrent long polls")
    parser.add_argument("--hold", type=int, default=3, help="seconds each long poll waits")
    options = parser.parse_args()
    figures = measure(options.calls, options.waiters, options.hold)
    print(f"context direct to the api   {figures['direct'] * 1000:8.2f} ms (baseline)")
    print(
        f"context through the bff     {figures['proxied'] * 1000:8.2f} ms  "
        f"ratio {figures['proxied'] / figures['direct']:.2f}"
    )
    polls = f"{options.waiters} long polls of {options.hold} s"
    print(f"{polls} to the api  {figures['held_direct']:8.2f} s (baseline)")
    print(
        f"{polls} via the bff  {figures['held']:8.2f} s   "
        f"ratio {figures['held'] / figures['held_direct']:.2f}"
    )
    print(f"bff /healthz idle           {figures['idle'] * 1000:8.2f} ms (baseline)")
    print(
        f"bff /healthz during polls   {figures['busy'] * 1000:8.2f} ms  "
        f"ratio {figures['busy'] / figures['idle']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
