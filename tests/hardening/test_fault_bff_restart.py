"""The bff killed and restarted while CLIs long-poll through it: every CLI still receives.

Real processes throughout: the api and the bff under gunicorn (gevent), a Celery
worker, and three `envcat get` console scripts waiting on the bff's fixed port.
The bff's whole process group is SIGKILLed mid-poll and started again on the same
port; the CLIs retry their network errors with backoff, and after the approvals
each prints exactly its values and exits 0.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.hardening.flows import CliRun, Owner, sign_up_owner
from tests.hardening.processes import ProcessStack, cli_environment

VALUES = {"DATABASE_URL": "postgres://db.internal/app", "API_TOKEN": "tok-restart"}
CLIS = 3


@pytest.mark.slow
def test_clis_waiting_through_a_restarted_bff_all_receive(
    process_stack: ProcessStack, tmp_path: Path
) -> None:
    owner = sign_up_owner(process_stack.api_url, process_stack.secret)
    bundle_id = owner.create_bundle("production/api", VALUES)
    env = cli_environment(tmp_path, owner.workspace)
    clis = [
        CliRun.start(process_stack.bff_url, "production/api", "--timeout", "90", env=env)
        for _ in range(CLIS)
    ]
    try:
        _restart_the_bff_while_waiting(process_stack, clis, owner, bundle_id)
    finally:
        for cli in clis:
            cli.stop()
        owner.client.close()
        process_stack.start_bff()  # the next test finds a running bff


def _restart_the_bff_while_waiting(
    process_stack: ProcessStack, clis: list[CliRun], owner: Owner, bundle_id: str
) -> None:
    request_ids = [cli.request_id() for cli in clis]
    time.sleep(1.0)  # every CLI is now inside a long poll held by the bff

    process_stack.kill_bff()
    time.sleep(1.0)  # the CLIs see the connection drop and start backing off
    assert all(cli.process.poll() is None for cli in clis), "a CLI gave up on a network error"
    process_stack.start_bff()

    for request_id in request_ids:
        assert owner.approve(request_id, bundle_id, list(VALUES)).status_code == 202
    for cli in clis:
        code, values, stderr = cli.finish(timeout=90)
        assert code == 0, stderr
        assert values == VALUES
    assert "connection lost, retrying" in "".join(clis[0].stderr_lines)
