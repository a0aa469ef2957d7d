"""`pip install envcat` without extras gives a working CLI and no server stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from envcat import __version__
from envcat.cli.commands import SERVER_EXTRA_HINT

REPO = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".venv",
    ".git",
    "node_modules",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "site",
    "artifacts",
    ".envcat",
    "tests",
)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False, env=env)


@pytest.mark.slow
def test_base_install_runs_the_cli_without_server_packages(
    tmp_path: Path, unused_port: int
) -> None:
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the work tree
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = run([str(venv / "bin" / "pip"), "install", "-q", str(source)])
    assert installed.returncode == 0, installed.stderr[-3000:]

    envcat = str(venv / "bin" / "envcat")
    version = run([envcat, "--version"])
    assert (version.returncode, version.stdout) == (0, f"envcat {__version__}\n")
    python = str(venv / "bin" / "python")
    assert run([python, "-c", "import flask"]).returncode != 0
    assert run([python, "-c", "import celery, sqlalchemy"]).returncode != 0
    assert run([python, "-c", "import click, httpx, nacl, qrcode"]).returncode == 0

    server = run([envcat, "server", "up"])
    assert (server.returncode, server.stderr) == (1, f"Error: {SERVER_EXTRA_HINT}\n")
    unreachable = run([envcat, "get", "--server", f"http://127.0.0.1:{unused_port}"])
    assert unreachable.returncode == 5, unreachable.stderr
