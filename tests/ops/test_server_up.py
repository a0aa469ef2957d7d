"""`envcat server up --demo` as a real process: the whole system, a real `envcat get`,
then Ctrl-C stops everything and leaves no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from envcat.bff.apiclient import BFF_SIGNER, HmacAuth, Signer
from envcat.ops.config import read_secrets
from tests.support import free_port
from tests.support.cli_env import ENVCAT, clean_environment

pytestmark = pytest.mark.slow
READY_LINE = "EnvCat is ready"
START_SECONDS = 150
STOP_SECONDS = 20
DEMO_KEYS = ["DATABASE_URL", "API_TOKEN", "DEBUG"]


@dataclass
class Lines:
    """Every line a process printed, collected by a thread."""

    items: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def follow(self, stream) -> None:
        for line in stream:
            with self.changed:
                self.items.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.items:
                    if found := re.search(pattern, line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.items[-40:])
                    raise AssertionError(f"no line matching {pattern!r}; last lines:\n{tail}")
                self.changed.wait(left)


def _descendants(root: int) -> set[int]:
    """Every live process below `root`, from /proc (the children run in their own sessions)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.update(children)
        frontier.extend(children)
    return found


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@dataclass
class RunningUp:
    process: subprocess.Popen[str]
    lines: Lines
    data_dir: Path
    api_url: str
    bff_url: str
    children: set[int] = field(default_factory=set)


@pytest.fixture
def running_up(tmp_path: Path) -> Iterator[RunningUp]:
    api_port, bff_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    args = ["server", "up", "--demo", "--api-port", str(api_port), "--bff-port", str(bff_port)]
    process = subprocess.Popen(
        [str(ENVCAT), *args, "--data-dir", str(data_dir)],
        cwd=tmp_path,
        env=clean_environment(WORKER_METRICS_PORT=str(free_port())),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = Lines()
    threading.Thread(target=lines.follow, args=(process.stdout,), daemon=True).start()
    up = RunningUp(
        process, lines, data_dir, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bff_port}"
    )
    try:
        lines.wait_for(READY_LINE, START_SECONDS)
        up.children = _descendants(process.pid)
        yield up
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_SECONDS)
        for pid in up.children | {process.pid}:  # never leave anything behind, even on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _demo_identity(up: RunningUp, secret: str) -> Signer:
    password = up.lines.wait_for(r"Demo account: demo@example\.com  password: (\S+)", 1).group(1)
    with httpx.Client(base_url=up.api_url, timeout=10) as api:
        reply = api.post(
            "/api/v1/internal/local-auth/sign-in",
            json={"email": "demo@example.com", "password": password},
            auth=HmacAuth(secret, BFF_SIGNER),
        )
    assert reply.status_code == 200, reply.text
    identity = reply.json()
    return Signer(identity["user"]["id"], identity["tenant"]["id"])


def _run_get_and_approve(up: RunningUp, secret: str, demo_user: Signer) -> dict[str, str]:
    # The banner's command exactly as printed (issue #15: it must run as shown), plus
    # options that only make it machine-readable.
    printed = up.lines.wait_for(r"Try it: (.+)$", 1).group(1)
    argv = shlex.split(printed)
    assert argv[1:4] == ["get", "demo/app", "-w"] and "--server" in argv, printed
    get = subprocess.Popen(
        [*argv, "--no-qr", "--format", "json"],
        env=clean_environment(XDG_CONFIG_HOME=str(up.data_dir / "cli-config")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages = Lines()
        threading.Thread(target=messages.follow, args=(get.stderr,), daemon=True).start()
        request_id = messages.wait_for(r"/approve/([A-Za-z0-9_-]+)", 60).group(1)
        phrase = messages.wait_for(r"Verification phrase:\s+(\S+)", 5).group(1)
        auth = HmacAuth(secret, demo_user)
        with httpx.Client(base_url=up.api_url, auth=auth, timeout=10) as api:
            context = api.get(f"/api/v1/requests/{request_id}/context").json()
            assert context["user_code"] == phrase
            bundles = api.get("/api/v1/bundles", params={"q": "demo/app"}).json()["bundles"]
            approve = api.post(
                f"/api/v1/requests/{request_id}/encrypt-from-bundle",
                json={"bundle_id": bundles[0]["id"], "include_keys": DEMO_KEYS},
            )
        assert approve.status_code == 202, approve.text
        out, _ = get.communicate(timeout=60)
    finally:
        if get.poll() is None:
            get.kill()
            get.wait()
    assert get.returncode == 0, messages.items
    values: dict[str, str] = json.loads(out)
    return values


def test_up_demo_serves_a_real_get_and_stops_cleanly(running_up: RunningUp) -> None:
    up = running_up
    secrets_path = up.data_dir / "secrets.env"
    assert stat.S_IMODE(secrets_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(up.data_dir.stat().st_mode) == 0o700
    secret = read_secrets(secrets_path)["BFF_SHARED_SECRET"]
    assert httpx.get(f"{up.api_url}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"{up.bff_url}/readyz", timeout=5).status_code == 200
    announced = re.findall(
        r"^envcat \| started (\w+) \(pid (\d+)\)$", "\n".join(up.lines.items), re.M
    )
    pids = {name: int(pid) for name, pid in announced}
    assert set(pids) == {"redis", "api", "worker", "beat", "bff"}
    # The internet-facing bff runs without the keyring or the database URL; the api has them.
    bff_environ = Path(f"/proc/{pids['bff']}/environ").read_bytes()
    assert b"BUNDLE_KMS_KEY=" not in bff_environ
    assert b"DATABASE_URL=" not in bff_environ
    assert b"BUNDLE_KMS_KEY=" in Path(f"/proc/{pids['api']}/environ").read_bytes()
    assert stat.S_IMODE((up.data_dir / "envcat.db").stat().st_mode) == 0o600
    # Redis wants the password from secrets.env, which no command line shows.
    password = read_secrets(secrets_path)["REDIS_PASSWORD"]
    redis_argv = Path(f"/proc/{pids['redis']}/cmdline").read_bytes()
    assert password.encode() not in redis_argv
    port_line = re.search(rb"^port (\d+)$", (up.data_dir / "redis.conf").read_bytes(), re.M)
    assert port_line is not None
    port = int(port_line[1])
    with redis.Redis(port=port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with redis.Redis(port=port, password=password) as allowed:
        assert allowed.ping()

    values = _run_get_and_approve(up, secret, _demo_identity(up, secret))
    assert sorted(values) == sorted(DEMO_KEYS)
    assert values["DEBUG"] == "true"
    assert values["API_TOKEN"].startswith("demo_")
    assert secret not in "\n".join(up.lines.items)

    children = up.children
    assert len(children) >= 5
    started = time.monotonic()
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(STOP_SECONDS) == 0
    assert time.monotonic() - started < STOP_SECONDS
    left = [pid for pid in children if _is_alive(pid)]
    assert not left, f"still running after up stopped: {left}"
    up.lines.wait_for(r"^envcat \| stopped$", 5)
