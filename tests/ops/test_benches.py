"""The benches keep working: they import, and the mixed-load bench completes a short run.

A bench is run by hand, so nothing else notices when a change to the wire breaks it
(bench/load.py stopped at its first request when creating one began to need a
workspace, and again when deliveries became signed envelopes).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every bench that is a command (bench/stack.py is the library the others share).
BENCHES = sorted(
    path.name
    for path in (ROOT / "bench").glob("*.py")
    if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
)


# One interpreter runs every bench's `--help` as `python bench/<name>.py --help` would (the
# script's folder first on sys.path, run as __main__), so the imports they share are paid
# once: a process per bench cost about 3 s each.
_HELP_RUNNER = """
import contextlib, io, json, runpy, sys
bench_dir, results = sys.argv[1], {}
for name in sys.argv[2:]:
    out, err, saved = io.StringIO(), io.StringIO(), list(sys.path)
    sys.argv, sys.path[0] = [f"{bench_dir}/{name}", "--help"], bench_dir
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(f"{bench_dir}/{name}", run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        except BaseException as error:
            err.write(repr(error))
            code = 1
    sys.path[:] = saved
    results[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, dict[str, Any]]:
    """Each bench's exit code, stdout and stderr for `--help`."""
    result = subprocess.run(
        [sys.executable, "-c", _HELP_RUNNER, str(ROOT / "bench"), *BENCHES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers: dict[str, dict[str, Any]] = json.loads(result.stdout.splitlines()[-1])
    return answers


@pytest.mark.parametrize("bench", BENCHES)
def test_every_bench_imports_and_explains_itself(
    bench: str, helps: dict[str, dict[str, Any]]
) -> None:
    answer = helps[bench]
    assert answer["code"] == 0, answer["stderr"]
    assert "usage:" in answer["stdout"]


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
