"""Fixtures of the hardening tests: a whole EnvCat of real processes on private services."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from envcat.core.settings import Settings
from envcat.models import migrate
from tests.conftest import make_settings
from tests.hardening.processes import (
    Processes,
    processes,
    server_environment,
    wait_until_healthy,
    worker_argv,
)
from tests.support import RedisServer, free_port, private_redis

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


@pytest.fixture(scope="session")
def process_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    """Every EnvCat process for real, on loopback, logging at DEBUG; stopped (by pid) at the end.

    Shared by the hardening tests that need real processes; a test that breaks a
    piece (stops Redis, kills the bff) puts it back before it ends.
    """
    directory = tmp_path_factory.mktemp("process-stack")
    api_port, bff_port = free_port(), free_port()
    with private_redis(directory / "redis") as redis, processes(directory / "logs") as procs:
        settings = make_settings(
            f"sqlite:///{directory / 'envcat.db'}",
            f"{redis.url}/0",
            f"{redis.url}/1",
            api_base_url=f"http://127.0.0.1:{api_port}",
            public_url=f"http://127.0.0.1:{bff_port}",
            request_ttl=REQUEST_TTL,
            worker_metrics_port=free_port(),
            log_level="DEBUG",
        )
        migrate.upgrade(settings.database_url)
        env = server_environment(settings)
        procs.start("worker", worker_argv("worker", ["approvals"]), env)
        api_url = procs.start_web("api", api_port, env)
        stack = ProcessStack(settings, redis, procs, api_url, bff_port, env)
        stack.start_bff()
        wait_until_healthy(api_url)
        yield stack
