"""A Redis primary, one replica and three Sentinels on loopback, for failover tests.

    with sentinel_cluster(tmp_path) as cluster:
        cluster.addresses            # "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
        cluster.kill_primary()       # SIGKILL; the sentinels promote the replica
        cluster.wait_for_new_primary()

Private ports and directories, no persistence. The sentinels call the primary
down after `DOWN_AFTER_MS` of silence (quorum 2 of 3).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from tests.support import free_port, wait_for_port

MASTER_NAME = "envcat-primary"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    return binary


def _redis(port: int, directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            _binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--dir", str(directory),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _sentinel(port: int, primary_port: int, directory: Path) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER_NAME} 1\n"
    )
    return subprocess.Popen(
        [_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class SentinelCluster:
    """The running processes and their ports."""

    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this cluster."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def primary_address(self) -> tuple[str, int] | None:
        """Where the sentinels say the primary is now (None when none answers)."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
                found = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                client.close()
                if isinstance(found, tuple):
                    return str(found[0]), int(found[1])
        return None

    def kill_primary(self) -> None:
        """SIGKILL the primary, as a crashed host would vanish."""
        process = self.processes.pop("primary")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def wait_for_new_primary(self, timeout: float = 30.0) -> float:
        """Block until the sentinels name the replica as primary; return the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.primary_address() == ("127.0.0.1", self.replica_port):
                return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError("the sentinels promoted no replica")

    def wait_until_replicated(self, timeout: float = 20.0) -> None:
        """Block until the replica is in sync and every sentinel knows it."""
        deadline = time.monotonic() + timeout
        replica = redis.Redis(port=self.replica_port, decode_responses=True)
        try:
            while time.monotonic() < deadline:
                link = replica.info("replication").get("master_link_status")
                known = all(self._sees_replica(port) for port in self.sentinel_ports)
                if link == "up" and known:
                    return
                time.sleep(0.1)
        finally:
            replica.close()
        raise TimeoutError("the replica did not sync, or the sentinels did not find it")

    def _sees_replica(self, port: int) -> bool:
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            replicas = client.sentinel_slaves(MASTER_NAME)
            sentinels = cast(list[dict[str, Any]], client.sentinel_sentinels(MASTER_NAME))
            client.close()
            return any(int(r["port"]) == self.replica_port for r in replicas) and (
                len(sentinels) >= 2
            )
        return False

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        self.processes.clear()


@contextlib.contextmanager
def sentinel_cluster(directory: Path) -> Iterator[SentinelCluster]:
    """Start primary, replica and three sentinels; stop them all when the block ends."""
    cluster = SentinelCluster(free_port(), free_port(), [free_port() for _ in range(3)])
    try:
        cluster.processes["primary"] = _redis(cluster.primary_port, directory / "primary")
        wait_for_port(cluster.primary_port)
        cluster.processes["replica"] = _redis(
            cluster.replica_port,
            directory / "replica",
            "--replicaof", "127.0.0.1", str(cluster.primary_port),
        )  # fmt: skip
        wait_for_port(cluster.replica_port)
        for index, port in enumerate(cluster.sentinel_ports):
            cluster.processes[f"sentinel{index}"] = _sentinel(
                port, cluster.primary_port, directory / f"sentinel{index}"
            )
            wait_for_port(port)
        cluster.wait_until_replicated()
        yield cluster
    finally:
        cluster.stop()
