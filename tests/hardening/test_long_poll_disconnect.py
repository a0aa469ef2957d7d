"""A long poll whose caller hung up must not take the payload (regression test).

Found by the bff-restart fault test: when the bff died, the api's long polls it
had forwarded kept waiting in Redis; on approval one of them took the sealed
payload (deleting it, as exactly-once delivery does) and wrote it to a closed
socket, so the CLI, retrying through the restarted bff, got 410. The api now
checks that its caller is still connected before it takes anything.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.envelopes import open_delivery
from tests.support.stack import LiveStack

VALUES = {"HUNG_UP": "still delivered"}


def _hang_up_a_long_poll(api_url: str, request_id: str, poll_token: str) -> None:
    """Send a long poll on a raw socket and close it while the api waits."""
    address = urlsplit(api_url)
    with socket.create_connection((address.hostname, address.port)) as raw:
        raw.sendall(
            f"GET /api/v1/requests/{request_id}/wait?timeout=20 HTTP/1.1\r\n"
            f"Host: {address.netloc}\r\nX-Poll-Token: {poll_token}\r\n\r\n".encode()
        )
        time.sleep(0.5)  # the api's poll now waits for the request's wake-up


@pytest.mark.slow
def test_a_hung_up_long_poll_leaves_the_payload_for_the_next(live_stack: LiveStack) -> None:
    account = live_stack.sign_up("hung-up@example.test", "correct horse battery staple")
    with (
        live_stack.signed(account["user"]["id"], account["tenant"]["id"]) as owner,
        httpx.Client(base_url=live_stack.api_url, timeout=30) as cli,
    ):
        bundle_id = owner.post("/api/v1/bundles", json={"name": "hung/up"}).json()["id"]
        for name, value in VALUES.items():
            added = owner.post(
                f"/api/v1/bundles/{bundle_id}/keys", json={"name": name, "value": value}
            )
            assert added.status_code == 201
        private_key = generate_keypair()
        body = {
            "client_pubkey": encode_public_key(private_key),
            "workspace": account["tenant"]["slug"],
        }
        created = cli.post("/api/v1/requests", json=body).json()
        _hang_up_a_long_poll(live_stack.api_url, created["id"], created["poll_token"])

        approved = owner.post(
            f"/api/v1/requests/{created['id']}/encrypt-from-bundle",
            json={"bundle_id": bundle_id, "include_keys": list(VALUES)},
        )
        assert approved.status_code == 202
        time.sleep(1.0)  # the worker has delivered; the orphaned poll has woken meanwhile
        reply = cli.get(
            f"/api/v1/requests/{created['id']}/wait",
            params={"timeout": 10},
            headers={"X-Poll-Token": created["poll_token"]},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "ready"
    assert open_delivery(private_key, reply.json()["ciphertext_base64"]) == VALUES
