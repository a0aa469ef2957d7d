"""Real EnvCat processes for fault tests and benchmarks: gunicorn api/bff, Celery workers.

Every child is started by a `Processes` group, logs to its own file in the group's
directory, and is stopped only by that group, by pid: nothing here touches a
process it did not start. The environment comes from one `Settings`, exactly as a
deployment passes it (`envcat.ops.config.settings_environment`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from envcat.core.settings import Settings
from envcat.ops.config import settings_environment
from tests.support import RedisServer

BIN = Path(sys.executable).parent
STOP_SECONDS = 20.0
_SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def server_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a server process: this one's, minus any setting, plus `settings`."""
    inherited = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    return {**inherited, **settings_environment(settings), "PYTHONUNBUFFERED": "1", **extra}


def gunicorn_argv(app: str, port: int, *, workers: int = 1) -> list[str]:
    """`gunicorn -k gevent` serving `envcat.<app>.wsgi:app` on 127.0.0.1:`port`."""
    return [
        str(BIN / "gunicorn"),
        "--worker-class=gevent",
        f"--workers={workers}",
        "--worker-connections=2000",
        "--graceful-timeout=5",
        "--no-control-socket",  # several masters on one host must not share its socket
        f"--bind=127.0.0.1:{port}",
        f"envcat.{app}.wsgi:app",
    ]


def worker_argv(name: str, queues: Sequence[str]) -> list[str]:
    """A Celery worker process consuming `queues` with the solo pool.

    Solo runs tasks in the main process, so its /metrics (WORKER_METRICS_PORT) counts
    them without a PROMETHEUS_MULTIPROC_DIR.
    """
    argv = [sys.executable, "-m", "celery", "-A", "envcat.workers", "worker", "--pool", "solo"]
    argv += ["-Q", ",".join(queues), "-n", f"{name}@%h", "--loglevel", "INFO"]
    return [*argv, "--without-gossip", "--without-mingle"]


def cli_argv(*args: str) -> list[str]:
    """The installed `envcat` console script with `args`."""
    return [str(BIN / "envcat"), *args]


def wait_until_healthy(base_url: str, timeout: float = 60.0) -> None:
    """Block until `base_url`/healthz answers 200, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{base_url}/healthz").status_code == 200:
                    return
            time.sleep(0.1)
    raise TimeoutError(f"{base_url} is not healthy after {timeout}s")


@dataclass
class Processes:
    """Children started by one owner; each logs to `<directory>/<name>.log`."""

    directory: Path
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start `argv` as `name` (a name already running is an error)."""
        assert name not in self.children, f"{name} was started already"
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / f"{name}.log").open("ab") as log:
            # A session of its own: the child and its workers form one group we can kill.
            child = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.children[name] = child
        return child

    def start_web(
        self, app: str, port: int, env: dict[str, str], *, workers: int = 1, name: str = ""
    ) -> str:
        """Start gunicorn for the api or the bff; return its base URL (not yet serving)."""
        self.start(name or f"{app}-{port}", gunicorn_argv(app, port, workers=workers), env)
        return f"http://127.0.0.1:{port}"

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the child and everything it forked (its own process group)."""
        child = self.children[name]
        if child.returncode is None:  # not reaped: its pid, hence its group, is still ours
            os.killpg(child.pid, sig)
            _wait_without_reaping(child.pid, STOP_SECONDS)
            child.wait()

    def stop(self, name: str) -> None:
        """SIGTERM to the child, SIGKILL to its group after STOP_SECONDS or once it exits."""
        self._stop([self.children[name]])

    def stop_all(self) -> None:
        """Stop every child still running, all at once."""
        self._stop(list(self.children.values()))

    @staticmethod
    def _stop(children: list[subprocess.Popen[bytes]]) -> None:
        running = [child for child in children if child.returncode is None]
        for child in running:
            # os.kill, not terminate(): terminate() polls, and would reap the leader early
            os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for child in running:
            _wait_without_reaping(child.pid, max(0.0, deadline - time.monotonic()))
            # The leader is at worst a zombie, so its group id cannot have been reused:
            # this reaches only what it forked (e.g. gunicorn workers of a killed master).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    def logs(self) -> str:
        """Everything every child has written so far."""
        return "\n".join(
            path.read_text(encoding="utf-8", errors="replace")
            for path in sorted(self.directory.glob("*.log"))
        )


def _wait_without_reaping(pid: int, seconds: float) -> None:
    """Wait until `pid` exits, leaving it a zombie (WNOWAIT) so its pid stays reserved."""
    deadline = time.monotonic() + seconds
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


@contextlib.contextmanager
def processes(directory: Path) -> Iterator[Processes]:
    """A group whose children are all stopped when the block ends."""
    group = Processes(directory)
    try:
        yield group
    finally:
        group.stop_all()


def descendants(pid: int) -> list[int]:
    """`pid` and every process it forked (read from /proc; Linux only)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue += parents.get(current, [])
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker_metric(port: int, metric: str, task: str) -> float:
    """One sample of a worker's /metrics (WORKER_METRICS_PORT) for `task`; 0 when absent."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and sample.labels.get("task") == task:
                return float(sample.value)
    return 0.0


REQUEST_TTL = 120


@dataclass
class ProcessStack:
    """A private redis-server, the api and the bff under gunicorn, and one worker process."""

    settings: Settings
    redis: RedisServer
    procs: Processes
    api_url: str
    bff_port: int
    env: dict[str, str]
    bff_generation: int = 0

    @property
    def bff_url(self) -> str:
        return f"http://127.0.0.1:{self.bff_port}"

    @property
    def secret(self) -> str:
        return self.settings.bff_shared_secret.get_secret_value()

    @property
    def bff_name(self) -> str:
        return f"bff-{self.bff_generation}"

    def start_bff(self) -> None:
        """Start the bff on its fixed port unless it runs; return once it is healthy."""
        if self.bff_name not in self.procs.children:
            self.procs.start_web("bff", self.bff_port, self.env, name=self.bff_name)
        wait_until_healthy(self.bff_url)

    def kill_bff(self) -> None:
        """SIGKILL the bff's master and workers at once; `start_bff` starts a new one."""
        self.procs.kill(self.bff_name)
        self.bff_generation += 1


def cli_environment(directory: Path, workspace: str) -> dict[str, str]:
    """A clean environment for `envcat` subprocesses: no ENVCAT_SERVER, a private HOME
    (so its own known_servers), and the workspace it asks."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(directory),
        "LANG": "C.UTF-8",
        "ENVCAT_WORKSPACE": workspace,
    }
