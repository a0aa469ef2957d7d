"""Checklist items of docs/security.md that no other test showed directly.

- Timing attacks on the bff signature: the api compares signatures with
  `hmac.compare_digest`, on every signed call (a spy on the real function).
- Guessing request ids: an unknown id, an expired one and a delivered one are
  answered alike, so probing learns nothing about which ids ever existed.
"""

from __future__ import annotations

import hmac
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from envcat.core import signing
from envcat.services.access_requests import store
from tests.support.api import REQUESTS, Cli


def test_every_signed_call_compares_its_signature_in_constant_time(
    signed_as: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # looked up at each call
    owner = signed_as("u-timing", "t-timing")
    assert owner.get("/api/v1/me").status_code == 200
    assert len(compared) == 1
    expected, given = compared[0]
    assert expected == given and len(expected) == 64  # the full hex HMAC, not a prefix

    forged = owner.get("/api/v1/me", headers={signing.HEADER_SIGNATURE: "0" * 64})
    assert forged.status_code == 401
    assert len(compared) == 2


def test_unknown_expired_and_delivered_ids_look_the_same(
    api_client: FlaskClient, redis_client: redis.Redis
) -> None:
    delivered = Cli.start(api_client)
    redis_client.hset(store.request_key(delivered.id), "s", "denied")
    assert delivered.wait().get_json() == {"status": "denied"}  # taken, hence gone
    expired = Cli.start(api_client)
    redis_client.delete(store.request_key(expired.id))
    unknown = Cli(api_client, delivered.private_key, id="A" * 32, poll_token="x" * 32)

    contexts = {
        api_client.get(f"{REQUESTS}/{c.id}/context").data for c in (delivered, expired, unknown)
    }
    waits = {(c.wait().status_code, c.wait().data) for c in (delivered, expired, unknown)}
    assert len(contexts) == 1 and len(waits) == 1
    assert waits.pop()[0] == 410
