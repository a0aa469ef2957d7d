"""Scale-out (issue #7) as a test: 2 apis, 2 bffs, 3 workers, RabbitMQ as the broker.

The Redis-broker run and the figures are in bench/scaleout.py (docs/reliability.md);
this test runs the RabbitMQ variant with 50 concurrent approvals, on a virtual host
of its own that it deletes afterwards.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.hardening.scaleout import cluster, drive, rabbitmq_vhost
from tests.support import port_answers

APPROVALS = 50


@pytest.mark.slow
def test_fifty_approvals_through_two_bffs_are_each_delivered_once(
    postgres_url: str, tmp_path: Path
) -> None:
    if shutil.which("rabbitmqctl") is None or not port_answers(5672):
        pytest.skip("RabbitMQ (rabbitmqctl and 127.0.0.1:5672) is not available")
    with rabbitmq_vhost() as broker_url, cluster(tmp_path, postgres_url, broker_url) as target:
        result = drive(target, APPROVALS, "rabbitmq")
    assert result.problems == []
    assert result.delivered_once == APPROVALS
    assert sum(result.tasks_per_worker.values()) == APPROVALS  # each approval ran once
    assert result.tasks_per_worker["provisioning-maintenance"] == 0
    assert all(result.tasks_per_worker[name] > 0 for name in ("approvals-1", "approvals-2"))
    assert result.sweeps_per_worker == {
        "approvals-1": 0.0,
        "approvals-2": 0.0,
        "provisioning-maintenance": 1.0,
    }
