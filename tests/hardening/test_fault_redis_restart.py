"""Redis restarted in the middle of a flow, under real processes: 503 while it is away,
the database untouched, and every process recovers by itself when it is back.

The stack's private redis-server (app data and broker) is stopped while a request
is pending, then started again on the same port, empty (it never persists). The
api and bff under gunicorn and the Celery worker are not restarted.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from nacl.public import PrivateKey

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.hardening.flows import Owner, sign_up_owner
from tests.hardening.processes import ProcessStack
from tests.hardening.snapshots import database_dump
from tests.support.envelopes import open_delivery

VALUES = {"REDIS_OUTAGE_A": "alpha", "REDIS_OUTAGE_B": "beta"}
RECOVERY_SECONDS = 30.0


def _create(public: httpx.Client, workspace: str) -> tuple[httpx.Response, PrivateKey]:
    private_key = generate_keypair()
    body = {"client_pubkey": encode_public_key(private_key), "workspace": workspace}
    return public.post("/api/v1/requests", json=body), private_key


def _wait(public: httpx.Client, created: dict[str, Any], timeout: int = 0) -> httpx.Response:
    return public.get(
        f"/api/v1/requests/{created['id']}/wait",
        params={"timeout": timeout},
        headers={"X-Poll-Token": created["poll_token"]},
    )


def _assert_unavailable(reply: httpx.Response, what: str) -> None:
    assert reply.status_code == 503, (what, reply.status_code, reply.text)
    assert reply.json()["error"] == "unavailable", what


def _recovered_flow(public: httpx.Client, owner: Owner, bundle_id: str) -> dict[str, str]:
    """A whole approval after the outage; retried only until Redis answers again."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while (reply := _create(public, owner.workspace))[
        0
    ].status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    response, private_key = reply
    assert response.status_code == 201, response.text
    created = response.json()
    assert owner.approve(created["id"], bundle_id, list(VALUES)).status_code == 202
    result = _wait(public, created, timeout=25).json()  # the worker reconnected to its broker
    assert result["status"] == "ready", result
    return open_delivery(private_key, result["ciphertext_base64"])


@pytest.mark.slow
def test_redis_restarted_mid_flow_gives_503_then_recovers(process_stack: ProcessStack) -> None:
    owner = sign_up_owner(process_stack.api_url, process_stack.secret)
    public = httpx.Client(base_url=process_stack.bff_url, timeout=30)
    try:
        bundle_id = owner.create_bundle("redis/outage", VALUES)
        pending, _ = _create(public, owner.workspace)
        assert pending.status_code == 201
        before = database_dump(process_stack.settings.database_url)

        process_stack.redis.stop()
        try:
            _assert_unavailable(_create(public, owner.workspace)[0], "create through the bff")
            _assert_unavailable(_wait(public, pending.json()), "wait through the bff")
            _assert_unavailable(_wait(public, pending.json(), timeout=5), "long poll")
            approval = owner.approve(pending.json()["id"], bundle_id, list(VALUES))
            _assert_unavailable(approval, "approve")
            _assert_unavailable(owner.client.get("/api/v1/bundles"), "signed read")
            assert database_dump(process_stack.settings.database_url) == before
        finally:
            process_stack.redis.start()  # same port, empty

        assert _recovered_flow(public, owner, bundle_id) == VALUES
        # The request pending before the outage is gone with Redis: its CLI is told so.
        assert _wait(public, pending.json()).status_code == 410
    finally:
        public.close()
        owner.client.close()
