"""The proxy's pass-through of rate limits (with the client's IP) and of Clerk webhooks.

A module of its own: these need a stack with a low REQUEST_RATE_LIMIT and a
webhook secret, and only one live stack (one Celery worker) may run at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.bff import assert_security_headers, module_stack
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def limited_stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url,
        redis_dbs,
        tmp_path_factory,
        request_rate_limit="2/minute",
        clerk_webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ) as limited:
        yield limited


def test_rate_limit_is_per_client_ip_with_retry_after(limited_stack: LiveStack) -> None:
    account = limited_stack.sign_up("limits@example.test", "correct horse battery")
    body = {
        "client_pubkey": encode_public_key(generate_keypair()),
        "workspace": account["tenant"]["slug"],
    }
    url = f"{limited_stack.bff_url}/api/v1/requests"
    first_ip = {"X-Forwarded-For": "203.0.113.5"}
    assert [httpx.post(url, json=body, headers=first_ip).status_code for _ in range(2)] == [
        201,
        201,
    ]
    limited = httpx.post(url, json=body, headers=first_ip)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert_security_headers(limited)
    other = httpx.post(url, json=body, headers={"X-Forwarded-For": "203.0.113.6"})
    assert other.status_code == 201


def test_clerk_webhook_body_reaches_the_api_byte_for_byte(limited_stack: LiveStack) -> None:
    from svix.webhooks import Webhook

    secret = limited_stack.settings.clerk_webhook_secret
    assert secret is not None
    # Odd spacing and key order: any re-serialisation would break the signature.
    body = (
        '{ "type":"user.created",  "data": {"id":"user_wh1","updated_at":1,\n'
        '"email_addresses":[]},"object":"event"}'
    )
    now = datetime.now(tz=UTC)
    signature = Webhook(secret.get_secret_value()).sign("msg_1", now, body)
    headers = {
        "svix-id": "msg_1",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
        "Content-Type": "application/json",
    }
    url = f"{limited_stack.bff_url}/api/v1/webhooks/clerk"
    accepted = httpx.post(url, content=body.encode(), headers=headers)
    assert accepted.status_code == 202, accepted.text
    tampered = httpx.post(url, content=body.replace("  ", " ").encode(), headers=headers)
    assert tampered.status_code == 401
