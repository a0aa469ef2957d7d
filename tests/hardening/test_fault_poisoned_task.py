"""A poisoned approval task (a bundle id that does not exist) under real processes.

`encrypt_from_bundle` is enqueued straight onto the broker for a request whose
recorded approval names a bundle that does not exist, while the real `envcat get`
waits for it through the bff. The request is marked failed, the CLI says why and
exits 1, and the task ran exactly once: the worker's own /metrics count one run and
no failure, and nothing is left in the broker to run again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from envcat.services.access_requests import store
from envcat.services.runtime import create_service_app
from envcat.workers.factory import create_celery
from tests.hardening.flows import CliRun, sign_up_owner
from tests.hardening.processes import ProcessStack, cli_environment, worker_metric
from tests.support.requests import record_approval

TASK = "envcat.encrypt_from_bundle"
MISSING_BUNDLE = "00000000-0000-4000-8000-000000000000"
RETRY_WINDOW_SECONDS = 3.0  # retry_backoff=1 with jitter: a retry would have run by now


def _worker_sample(stack: ProcessStack, metric: str) -> float:
    return worker_metric(stack.settings.worker_metrics_port, metric, TASK)


def _runs(stack: ProcessStack) -> float:
    return _worker_sample(stack, "envcat_task_duration_seconds_count")


@pytest.mark.slow
def test_a_task_for_a_missing_bundle_fails_the_request_once(
    process_stack: ProcessStack, tmp_path: Path
) -> None:
    owner = sign_up_owner(process_stack.api_url, process_stack.secret)
    owner.client.close()
    app_redis = redis.Redis.from_url(process_stack.settings.redis_url, decode_responses=True)
    broker = redis.Redis.from_url(process_stack.settings.broker_url, decode_responses=True)
    env = cli_environment(tmp_path, owner.workspace)
    cli = CliRun.start(process_stack.bff_url, "--timeout", "60", env=env)
    try:
        request_id = cli.request_id()
        runs, failures = (
            _runs(process_stack),
            _worker_sample(process_stack, "envcat_task_failures_total"),
        )
        # an approval the api would have MACed, for a bundle that does not exist
        with create_service_app(process_stack.settings).app_context():
            request = store.get(app_redis, request_id)
            assert request is not None
            mac = record_approval(app_redis, request, owner.user_id, MISSING_BUNDLE, ["A"])
        celery = create_celery(process_stack.settings)
        celery.send_task(TASK, args=[request_id, mac])

        code, values, stderr = cli.finish(timeout=60)
        assert code == 1 and values is None
        assert (
            "the approval could not be carried out: the bundle was deleted after the approval"
            in stderr
        )
        time.sleep(RETRY_WINDOW_SECONDS)
        assert _runs(process_stack) == runs + 1  # once, and not again
        assert _worker_sample(process_stack, "envcat_task_failures_total") == failures
        assert broker.llen("approvals") == 0 and broker.hlen("unacked") == 0
        assert store.get(app_redis, request_id) is None  # taken by the CLI: final and gone
    finally:
        cli.stop()
        app_redis.close()
        broker.close()
