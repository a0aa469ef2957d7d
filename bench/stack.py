"""Shared pieces of the benches: the stack as deployed, and a closed-loop HTTP load.

Every process is started by a `tests.hardening.processes.Processes` group (stopped by
pid when the block ends) with the exact command lines the deployment docs give:

- the api: `gunicorn -c envcat/api/gunicorn.conf.py envcat.api.wsgi:app`
  (docs/api-deployment.md: gevent, 2 workers, 5,000 connections each);
- the bff: `gunicorn -c envcat/bff/gunicorn.conf.py` (`envcat server up`);
- a private redis-server with its default configuration.
"""

from __future__ import annotations

import http.client
import runpy
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the process helpers live with the tests
    sys.path.insert(0, str(ROOT))

from envcat.core.settings import Settings  # noqa: E402
from envcat.models import migrate  # noqa: E402
from tests.hardening.processes import (  # noqa: E402
    BIN,
    Processes,
    processes,
    server_environment,
    wait_until_healthy,
)
from tests.support import RedisServer, free_port  # noqa: E402
from tests.support.settings import make_settings  # noqa: E402

API_GUNICORN_CONF = ROOT / "envcat" / "api" / "gunicorn.conf.py"
BFF_GUNICORN_CONF = ROOT / "envcat" / "bff" / "gunicorn.conf.py"


def _bff_settings() -> dict[str, Any]:
    """The numbers of the bff's gunicorn settings file, which the bare app is served with too."""
    names = ("worker_class", "workers", "worker_connections", "keepalive")  # and its access log
    found = runpy.run_path(str(BFF_GUNICORN_CONF)) if BFF_GUNICORN_CONF.exists() else {}
    defaults = {"worker_class": "gevent", "workers": 2, "worker_connections": 2000, "keepalive": 2}
    return {name: found.get(name, defaults[name]) for name in names}


def api_argv(port: int) -> list[str]:
    """The api exactly as docs/api-deployment.md runs it, on 127.0.0.1:`port`."""
    return [str(BIN / "gunicorn"), "-c", str(API_GUNICORN_CONF), "--no-control-socket",
            f"--bind=127.0.0.1:{port}", "envcat.api.wsgi:app"]  # fmt: skip


def bff_argv(port: int, app: str = "envcat.bff.wsgi:app") -> list[str]:
    """The bff as deployed (its settings file); any other WSGI `app` with the same numbers."""
    if app == "envcat.bff.wsgi:app" and BFF_GUNICORN_CONF.exists():
        return [str(BIN / "gunicorn"), "-c", str(BFF_GUNICORN_CONF), "--no-control-socket",
                f"--bind=127.0.0.1:{port}", app]  # fmt: skip
    conf = _bff_settings()
    return [str(BIN / "gunicorn"), f"--worker-class={conf['worker_class']}",
            f"--workers={conf['workers']}", f"--worker-connections={conf['worker_connections']}",
            f"--keep-alive={conf['keepalive']}", "--access-logfile=-", "--graceful-timeout=5",
            "--no-control-socket",
            f"--bind=127.0.0.1:{port}", app]  # fmt: skip


@dataclass
class Stack:
    """A running private Redis plus whichever web processes were asked for."""

    directory: Path
    redis_url: str
    settings: Settings
    group: Processes
    redis_pid: int = 0
    api: str = ""
    bff: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        """The environment every EnvCat child process gets."""
        return server_environment(self.settings, **extra)


@contextmanager
def stack(
    directory: Path,
    *,
    api: bool = True,
    bff: bool = True,
    database_url: str = "",
    **overrides: object,
) -> Iterator[Stack]:
    """Start Redis (defaults), migrate a fresh database (SQLite unless given), the api and bff."""
    with ExitStack() as exits:
        server = RedisServer(port=free_port(), directory=directory / "redis")
        server.start()
        exits.callback(server.stop)
        database_url = database_url or f"sqlite:///{directory / 'envcat.db'}"
        migrate.upgrade(database_url)
        api_port, bff_port = free_port(), free_port()
        values: dict[str, object] = {
            "api_base_url": f"http://127.0.0.1:{api_port}",
            "public_url": f"http://127.0.0.1:{bff_port}",
            "request_rate_limit": "100000000/minute",
            "log_level": "WARNING",
            # a bench's clients all come from 127.0.0.1
            "max_pending_per_ip": 1_000_000,
            **overrides,
        }
        # Settings this tree does not have yet (or any more) are left out.
        values = {k: v for k, v in values.items() if k in Settings.model_fields}
        settings = make_settings(database_url, f"{server.url}/0", f"{server.url}/1", **values)
        seed_workspace(settings)
        group = exits.enter_context(processes(directory / "logs"))
        running = Stack(directory, server.url, settings, group, redis_pid=server.process.pid)  # type: ignore[union-attr]
        if api:
            group.start("api", api_argv(api_port), running.env())
            running.api = f"http://127.0.0.1:{api_port}"
        if bff:
            group.start("bff", bff_argv(bff_port), running.env())
            running.bff = f"http://127.0.0.1:{bff_port}"
        for url in (running.api, running.bff):
            if url:
                wait_until_healthy(url)
        yield running


WORKSPACE, USER = "bench", "u-bench"


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and everything it forked; 0 once gone."""
    import psutil  # type: ignore[import-untyped]  # no stubs installed

    total = 0.0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            times = process.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


def machine_load() -> str:
    """The 1-minute load average against the core count: wall-clock figures depend on it."""
    import os

    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def seed_workspace(settings: Settings) -> None:
    """Create the tenant (workspace slug `bench`) and owner that requests name."""
    from envcat.models import db
    from envcat.services.runtime import create_service_app
    from tests.support.signed import add_member

    app = create_service_app(settings, "bench-seed")
    with app.app_context():
        add_member(USER, WORKSPACE)
        db.session.commit()
        db.engine.dispose()


def percentile(samples: list[float], p: float) -> float:
    """The p-th percentile (0-100) of `samples`, inclusive method; NaN when empty."""
    if not samples:
        return float("nan")
    if len(samples) == 1:
        return samples[0]
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return samples[0] if p <= 0 else cuts[min(98, max(0, round(p) - 1))]


@dataclass
class LoadResult:
    """What a closed-loop load saw."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)


def closed_loop(
    base_url: str,
    path: str,
    body: Callable[[int], bytes],
    *,
    clients: int = 8,
    seconds: float = 10.0,
    expect: int = 201,
) -> LoadResult:
    """`clients` threads POST `body(i)` back to back on kept-alive connections for `seconds`.

    http.client rather than httpx: the load generator shares the machine's two cores
    with the servers it measures, so it must cost as little as possible per call.
    """
    host, port = base_url.removeprefix("http://").split(":")
    result = LoadResult(seconds=seconds)
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Content-Type": "application/json"}
        mine: list[float] = []
        errors: dict[str, int] = {}
        i = index
        while (started := time.perf_counter()) < stop_at:
            try:
                connection.request("POST", path, body=body(i), headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status != expect:
                    errors[f"HTTP {response.status}"] = errors.get(f"HTTP {response.status}", 0) + 1
                else:
                    mine.append(time.perf_counter() - started)
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
            i += clients
        connection.close()
        with lock:
            result.latencies += mine
            for kind, count in errors.items():
                result.errors[kind] = result.errors.get(kind, 0) + count

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result
