"""Request creation through the bff, beside the bare Flask+Redis app, in the same run.

Starts a private Redis (defaults), the api and the bff exactly as deployed
(`bench/stack.py`) and the bare Flask+Redis app of `bench/baselines.py` under the
bff's gunicorn settings, then runs `--clients` closed-loop clients against each in
turn, `--rounds` times interleaved (so machine noise hits all alike), for
`--seconds` in total each: `POST /api/v1/requests` naming a seeded workspace. Also
measured: the same straight to the api, and the CPU time each process group
(gunicorn master + workers, redis-server) spent per request, which is where the
time goes on a machine whose two cores are the bottleneck.

Target (issue #14): through the bff >= 0.5x the bare app's req/s.

    python bench/create_throughput.py [--seconds 10] [--clients 8] [--rounds 4] [--check]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import create_body, start_bare_flask
from stack import LoadResult, closed_loop, cpu_seconds, machine_load, stack

from envcat.core.sealing import encode_public_key, generate_keypair

TARGET_RATIO = 0.5
PATH = "/api/v1/requests"
LABELS = {
    "bare": "bare Flask+Redis app (baseline)",
    "api": "create straight to the api",
    "bff": "create through the bff",
}


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def measure(
    seconds: float, clients: int, rounds: int
) -> tuple[dict[str, LoadResult], dict[str, dict[str, float]]]:
    """Return each target's load and its CPU seconds per process group."""
    pubs = [encode_public_key(generate_keypair()) for _ in range(64)]
    body = create_body(pubs)
    results = {name: LoadResult(seconds=0.0) for name in LABELS}
    cpu: dict[str, dict[str, float]] = {name: defaultdict(float) for name in LABELS}
    with tempfile.TemporaryDirectory(prefix="envcat-create-") as tmp, stack(Path(tmp)) as running:
        urls = {"bare": start_bare_flask(running.group, running.redis_url, Path(tmp))}
        urls |= {"api": running.api, "bff": running.bff}
        pids = {name: child.pid for name, child in running.group.children.items()}
        pids["redis"] = running.redis_pid
        for url in urls.values():  # loads the app in every worker
            closed_loop(url, PATH, body, clients=clients, seconds=min(2.0, seconds / 5))  # type: ignore[arg-type]
        for _ in range(rounds):
            for name, url in urls.items():
                before = _cpu(pids)
                load = closed_loop(url, PATH, body, clients=clients, seconds=seconds / rounds)  # type: ignore[arg-type]
                after = _cpu(pids)
                for group in pids:
                    cpu[name][group] += after[group] - before[group]
                results[name].seconds += load.seconds
                results[name].latencies += load.latencies
                for kind, count in load.errors.items():
                    results[name].errors[kind] = results[name].errors.get(kind, 0) + count
    return results, cpu


def main() -> int:
    """Print req/s and p50 of each, the bff's ratio to the bare app, and CPU per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per target (default 10)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved slices (default 4)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 below {TARGET_RATIO}x")
    options = parser.parse_args()
    machine = machine_load()
    results, cpu = measure(options.seconds, options.clients, options.rounds)
    bare = results["bare"]
    print(
        f"{options.clients} clients, {options.seconds:g} s each,"
        f" in {options.rounds} interleaved slices ({machine} at start)"
    )
    for name, load in results.items():
        print(
            f"{LABELS[name]:34} {load.rate:7.1f} req/s  p50 {load.p50 * 1000:6.2f} ms"
            f"  p99 {load.p99 * 1000:6.2f} ms  ratio {load.rate / bare.rate:4.2f}"
            f"  errors {sum(load.errors.values())}"
        )
    ratio = results["bff"].rate / bare.rate
    print(f"{'bff / bare req/s':34} {ratio:.2f}  (target >= {TARGET_RATIO})")
    print("CPU ms per request, by process group (gunicorn master + workers; redis-server):")
    for name, load in results.items():
        count = max(1, len(load.latencies))
        parts = "  ".join(
            f"{group} {seconds / count * 1000:5.2f}"
            for group, seconds in cpu[name].items()
            if seconds / count >= 0.00005
        )
        print(f"  {LABELS[name]:32} {parts}")
    errors = sum(sum(load.errors.values()) for load in results.values())
    return 1 if errors or (options.check and ratio < TARGET_RATIO) else 0


if __name__ == "__main__":
    sys.exit(main())
