"""How much slower `envcat --version` starts than `python -c "import click"`.

Runs both, interleaved, many times in the same session (so machine noise hits
both alike) and compares the medians. The target is a ratio of at most 1.5:
the CLI must import little more than click before it can answer.

    python bench/cli_startup.py [--runs 40] [--target 1.5] [--check]

`--check` exits 1 when the ratio is above the target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _envcat_executable() -> str:
    beside_python = Path(sys.executable).with_name("envcat")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("envcat")
    if found is None:
        sys.exit("envcat is not installed in this environment: pip install -e .")
    return found


def _wall_time(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(runs: int) -> tuple[float, float]:
    """Return the median wall times (seconds) of envcat --version and import click."""
    envcat = [_envcat_executable(), "--version"]
    click_only = [sys.executable, "-c", "import click"]
    for argv in (envcat, click_only):  # warm the page cache and the bytecode
        _wall_time(argv)
    envcat_times: list[float] = []
    click_times: list[float] = []
    for _ in range(runs):
        envcat_times.append(_wall_time(envcat))
        click_times.append(_wall_time(click_only))
    return statistics.median(envcat_times), statistics.median(click_times)


def main() -> int:
    """Print both medians and their ratio; with --check, fail above the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="repetitions of each (default 40)")
    parser.add_argument("--target", type=float, default=1.5, help="maximum ratio (default 1.5)")
    parser.add_argument("--check", action="store_true", help="exit 1 above the target")
    options = parser.parse_args()
    envcat, click_only = measure(options.runs)
    ratio = envcat / click_only
    verdict = "within" if ratio <= options.target else "ABOVE"
    print(f"envcat --version        median {envcat * 1000:7.1f} ms  ({options.runs} runs)")
    print(f'python -c "import click" median {click_only * 1000:7.1f} ms  ({options.runs} runs)')
    print(f"ratio {ratio:.2f}x  ({verdict} the {options.target:.2f}x target)")
    return 1 if options.check and ratio > options.target else 0


if __name__ == "__main__":
    sys.exit(main())
