"""Run the speed benches of issue #14 in a quick mode and print one table.

Each row is one figure beside the baseline measured in the same run, their ratio
and the target. Each bench is also one command of its own, with fuller defaults:

    .venv/bin/python bench/approval_latency.py     # approve -> delivery vs bare Celery hop
    .venv/bin/python bench/create_throughput.py    # create through the bff vs bare Flask+Redis
    .venv/bin/python bench/waiters.py              # 2,000 long polls, api and bff
    .venv/bin/python bench/redis_memory.py         # bytes per pending request
    .venv/bin/python bench/baselines.py            # the two floors alone

    python bench/all.py [--full]      (make bench)

Exits 1 when a hard property fails (errors, a poll later than timeout + 2 s).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


@dataclass
class Row:
    """One line of the table."""

    figure: str
    measured: str
    baseline: str
    ratio: str
    target: str
    hard_failure: bool = False


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def approval_rows(full: bool) -> list[Row]:
    """Approval -> long-poll answer against the bare Celery no-op round trip."""
    import approval_latency

    latencies, floors, pings, big = approval_latency.run(200 if full else 60, big_keys=1000)
    p50, p99 = approval_latency._percentiles(latencies)
    b50, b99 = approval_latency._percentiles(floors)
    g50, _ = approval_latency._percentiles(pings)
    k50, _ = approval_latency._percentiles(big)
    return [
        Row(
            "approve 202 -> long-poll answer p50 (5 keys)",
            _ms(p50),
            f"bare Celery no-op {_ms(b50)}",
            f"{p50 / b50:.2f}x",
            "<= 3x",
        ),
        Row(
            "  same, p99", _ms(p99), f"bare Celery no-op {_ms(b99)}", f"{p99 / b99:.2f}x", "<= 10x"
        ),
        Row("  envcat.ping round trip p50", _ms(g50), f"bare {_ms(b50)}", f"{g50 / b50:.2f}x", "-"),
        Row(
            "1,000-key approve 202 -> answer p50",
            _ms(k50),
            f"5-key approval {_ms(p50)}",
            f"{k50 / p50:.2f}x",
            "<= 1.5x",
        ),
    ]


def create_rows(full: bool) -> list[Row]:
    """Request creation through the bff against the bare Flask+Redis app."""
    import create_throughput

    results, _ = create_throughput.measure(10.0 if full else 4.0, 8, 4 if full else 2)
    bare, api, bff = results["bare"], results["api"], results["bff"]
    errors = sum(sum(r.errors.values()) for r in results.values())
    baseline = f"bare Flask+Redis {bare.rate:.0f} req/s (p50 {_ms(bare.p50)})"
    return [
        Row(
            "create through the bff, 8 clients",
            f"{bff.rate:.0f} req/s (p50 {_ms(bff.p50)})",
            baseline,
            f"{bff.rate / bare.rate:.2f}x",
            ">= 0.5x",
            hard_failure=errors > 0,
        ),
        Row(
            "  create straight to the api",
            f"{api.rate:.0f} req/s (p50 {_ms(api.p50)})",
            baseline,
            f"{api.rate / bare.rate:.2f}x",
            "-",
        ),
    ]


def waiter_rows(full: bool) -> list[Row]:
    """2,000 concurrent long polls, straight and through the bff."""
    import waiters

    hold = 20 if full else 10
    options = argparse.Namespace(n=2000, hold=hold, ramp=2.0, via="api,bff")
    waiters._raise_open_file_limit()
    rows = []
    for load in waiters.run(options):
        late = [d - hold for d in load.durations]
        worst = f"{max(late):+.1f} s" if late else "-"
        rows.append(
            Row(
                f"2,000 long polls (timeout={hold}) {load.target}",
                f"{sum(load.errors.values())} errors, latest {worst}",
                "-",
                "-",
                "0 errors, all <= +2 s",
                hard_failure=not waiters.is_clean(load, hold),
            )
        )
    return rows


def memory_rows(full: bool) -> list[Row]:
    """Redis bytes per pending request, default configuration (its own command)."""
    argv = [
        sys.executable,
        str(HERE / "redis_memory.py"),
        "--requests",
        "10000" if full else "2000",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    shapes = {"typical": "typical", "typical, all in one workspace": "all in one workspace"}
    sizes = {
        label: re.search(rf"^{re.escape(shape)}\s+(\d+) bytes", done.stdout, re.MULTILINE)
        for shape, label in shapes.items()
    }
    if done.returncode != 0 or None in sizes.values():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [Row("Redis bytes per pending request", f"failed: {tail[0][:60]}", "-", "-", "-")]
    return [
        Row(
            f"Redis bytes per pending request ({label})",
            f"{int(found.group(1))} B",
            "budget 1,024 B",
            f"{int(found.group(1)) / 1024:.2f}x",
            "<= 1x",
        )
        for label, found in sizes.items()
        if found is not None
    ]


BENCHES: list[Callable[[bool], list[Row]]] = [approval_rows, create_rows, waiter_rows, memory_rows]


def main() -> int:
    """Run every bench, print one table, exit 1 on a hard failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each bench's full defaults")
    options = parser.parse_args()
    rows: list[Row] = []
    for bench in BENCHES:
        print(f"running {bench.__name__.removesuffix('_rows')} …", file=sys.stderr, flush=True)
        try:
            rows += bench(options.full)
        except Exception as exc:  # one broken bench must not hide the others' figures
            traceback.print_exc()
            rows.append(Row(bench.__name__, f"failed: {exc!r}"[:70], "-", "-", "-", True))
    header = ("figure", "measured", "baseline (same run)", "ratio", "target")
    table = [header, *((r.figure, r.measured, r.baseline, r.ratio, r.target) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 1 if any(r.hard_failure for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
