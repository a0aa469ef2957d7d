"""The benches keep working: they import, and the mixed-load bench completes a short run.

A bench is run by hand, so nothing else notices when a change to the wire breaks it
(bench/load.py stopped at its first request when creating one began to need a
workspace, and again when deliveries became signed envelopes).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every bench that is a command (bench/stack.py is the library the others share).
BENCHES = sorted(
    path.name
    for path in (ROOT / "bench").glob("*.py")
    if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("bench", BENCHES)
def test_every_bench_imports_and_explains_itself(bench: str) -> None:
    result = subprocess.run(
        [sys.executable, f"bench/{bench}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_load_bench_delivers_with_no_errors() -> None:
    result = subprocess.run(
        [sys.executable, "bench/load.py", "--seconds", "8", "--clis", "2", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    delivered = re.search(r"deliveries: (\d+) in", result.stdout)
    assert delivered is not None, result.stdout
    assert int(delivered.group(1)) > 0, result.stdout
    assert re.search(r"^errors: 0$", result.stdout, re.MULTILINE), result.stdout


def test_a_pending_request_fits_the_redis_budget_at_defaults() -> None:
    # issue #14: at most 1 KB per pending request with Redis's default configuration,
    # spread over workspaces and all in one (N = 2,000 keeps this to about a second)
    result = subprocess.run(
        [sys.executable, "bench/redis_memory.py", "--requests", "2000", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert re.search(r"^typical, all in one workspace\s+\d+ bytes", result.stdout, re.M)
