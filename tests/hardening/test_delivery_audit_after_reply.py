"""The CLI's answer is sent before the delivery's audit append, which still happens
(issue #14), under the deployed servers: gunicorn (gevent) for the api and the bff.

The append runs when the server closes the reply (`api.context.after_response`), so
this checks the servers EnvCat is deployed with really close it: a real `envcat get`
receives its values through the bff, and the workspace's log then holds exactly one
`request.delivered` for the request, after its `request.approved`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.hardening.flows import CliRun, Owner, sign_up_owner
from tests.hardening.processes import ProcessStack, cli_environment

VALUES = {"AFTER_REPLY": "audited-after-the-answer"}


def _events_for(owner: Owner, request_id: str, seconds: float = 10.0) -> list[dict[str, Any]]:
    """The request's events, oldest first, once `request.delivered` is among them."""
    deadline = time.monotonic() + seconds
    while True:
        events = owner.client.get("/api/v1/audit", params={"target": request_id}).json()["events"]
        if any(e["action"] == "request.delivered" for e in events) or time.monotonic() > deadline:
            return list(reversed(events))
        time.sleep(0.05)


@pytest.mark.slow
def test_a_delivery_is_audited_once_after_the_cli_has_its_values(
    process_stack: ProcessStack, tmp_path: Path
) -> None:
    owner = sign_up_owner(process_stack.api_url, process_stack.secret)
    bundle_id = owner.create_bundle("after/reply", VALUES)
    cli = CliRun.start(
        process_stack.bff_url, "--timeout", "60", env=cli_environment(tmp_path, owner.workspace)
    )
    try:
        request_id = cli.request_id()
        assert owner.approve(request_id, bundle_id, list(VALUES)).status_code == 202
        code, values, stderr = cli.finish(timeout=60)
        assert (code, values) == (0, VALUES), stderr
        actions = [event["action"] for event in _events_for(owner, request_id)]
        assert actions == ["request.approved", "request.delivered"]
    finally:
        cli.stop()
        owner.client.close()
