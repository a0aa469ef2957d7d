"""Fixtures of the hardening tests: a whole EnvCat of real processes on private services
(the helpers are in tests/hardening/processes.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hardening.processes import (
    REQUEST_TTL,
    ProcessStack,
    processes,
    server_environment,
    wait_until_healthy,
    worker_argv,
)
from tests.support import free_port, private_redis
from tests.support.databases import migrated
from tests.support.settings import make_settings


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
        migrated(settings.database_url)
        env = server_environment(settings)
        procs.start("worker", worker_argv("worker", ["approvals"]), env)
        api_url = procs.start_web("api", api_port, env)
        stack = ProcessStack(settings, redis, procs, api_url, bff_port, env)
        stack.start_bff()
        wait_until_healthy(api_url)
        yield stack
