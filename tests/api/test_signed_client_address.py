"""A signed bff call that also vouches for the client's address spends both single-use
values, the call's nonce and the address proof's, in one Redis round trip (issue #22),
and every replay is still refused as it was when they were spent one by one.

The real api app and a real Redis; the attacker replays headers seen on the wire
between the bff and the api, or forges a signature with a fresh proof.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from envcat.api import auth
from envcat.core import forwarding, signing
from envcat.core.settings import Settings
from envcat.models import AuditEvent, db
from tests.support.api import REQUESTS, Cli, audit_actions
from tests.support.signed import add_member

TENANT, USER = "t-acme", "u-owner"
CLIENT = "203.0.113.7"
SOCKET = "127.0.0.1"  # what the test client's socket address is


@pytest.fixture
def secret(settings: Settings) -> str:
    return settings.bff_shared_secret.get_secret_value()


@pytest.fixture
def store(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    client.close()


def _pending(api_app: Flask) -> str:
    add_member(USER, TENANT)
    return Cli.start(api_app.test_client()).id


def _signed(secret: str, path: str) -> dict[str, str]:
    return signing.sign_headers(secret, USER, TENANT, "POST", path, "", b"")


def _proof(secret: str, path: str) -> dict[str, str]:
    return forwarding.client_headers(secret, CLIENT, "POST", path)


def _deny(api_app: Flask, path: str, headers: dict[str, str]) -> Any:
    return api_app.test_client().post(path, headers={**headers, "Content-Type": "application/json"})


def _denial_ip(request_id: str) -> str | None:
    db.session.expire_all()
    return db.session.execute(
        select(AuditEvent.ip).where(
            AuditEvent.action == "request.denied", AuditEvent.target == request_id
        )
    ).scalar_one_or_none()


@pytest.fixture
def nonce_trips(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every Redis round trip of this process that spends a nonce, as the bytes it sent."""
    sent: list[bytes] = []
    original: Callable[..., None] = redis.connection.AbstractConnection.send_packed_command

    def recording(self: Any, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes | str) else b"".join(command)
        packed = packed.encode() if isinstance(packed, str) else packed
        if b"nonce:" in packed:
            sent.append(packed)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", recording)
    return sent


def test_both_nonces_of_a_signed_call_with_an_address_are_spent_in_one_round_trip(
    api_app: Flask, secret: str, store: redis.Redis, nonce_trips: list[bytes]
) -> None:
    request_id = _pending(api_app)
    path = f"{REQUESTS}/{request_id}/deny"
    signed = _signed(secret, path)
    response = _deny(api_app, path, {**signed, **_proof(secret, path)})

    assert response.status_code == 200, response.get_json()
    [trip] = nonce_trips  # one round trip carried both
    nonce = signed[signing.HEADER_NONCE]
    assert auth.call_nonce_key(nonce).encode() in trip
    assert forwarding.NONCE_KEY_PREFIX.encode() in trip
    assert store.exists(auth.call_nonce_key(nonce)) == 1
    assert _denial_ip(request_id) == CLIENT  # the address was adopted


def test_a_signed_call_without_an_address_still_spends_its_nonce_once(
    api_app: Flask, secret: str, nonce_trips: list[bytes]
) -> None:
    request_id = _pending(api_app)
    path = f"{REQUESTS}/{request_id}/deny"
    signed = _signed(secret, path)
    assert _deny(api_app, path, signed).status_code == 200
    replayed = _deny(api_app, path, signed)
    assert replayed.status_code == 401
    assert replayed.get_json()["message"] == "Nonce already used."
    assert len(nonce_trips) == 2
    assert _denial_ip(request_id) == SOCKET


def test_a_replayed_call_with_its_proof_is_refused(api_app: Flask, secret: str) -> None:
    request_id = _pending(api_app)
    path = f"{REQUESTS}/{request_id}/deny"
    seen_on_the_wire = {**_signed(secret, path), **_proof(secret, path)}
    assert _deny(api_app, path, seen_on_the_wire).status_code == 200

    replayed = _deny(api_app, path, seen_on_the_wire)

    assert replayed.status_code == 401
    assert replayed.get_json()["message"] == "Nonce already used."


def test_a_replayed_signature_with_a_fresh_proof_is_refused(api_app: Flask, secret: str) -> None:
    request_id = _pending(api_app)
    path = f"{REQUESTS}/{request_id}/deny"
    signed = _signed(secret, path)
    assert _deny(api_app, path, {**signed, **_proof(secret, path)}).status_code == 200

    replayed = _deny(api_app, path, {**signed, **_proof(secret, path)})

    assert replayed.status_code == 401  # refused before the view: not a 409
    assert replayed.get_json()["message"] == "Nonce already used."
    assert audit_actions(TENANT) == [("request.denied", request_id)]


def test_a_replayed_proof_on_a_fresh_call_lends_no_address(api_app: Flask, secret: str) -> None:
    first, second = _pending(api_app), Cli.start(api_app.test_client()).id
    first_path, second_path = f"{REQUESTS}/{first}/deny", f"{REQUESTS}/{second}/deny"
    proof = _proof(secret, first_path)
    assert _deny(api_app, first_path, {**_signed(secret, first_path), **proof}).status_code == 200
    # The same path and a still-fresh timestamp: only the spent nonce stops the replay.
    same_path_proof = forwarding.client_headers(
        secret,
        CLIENT,
        "POST",
        second_path,
        now=int(proof[forwarding.HEADER_CLIENT_PROOF].split(".")[0]),
        nonce=proof[forwarding.HEADER_CLIENT_PROOF].split(".")[1],
    )

    answer = _deny(api_app, second_path, {**_signed(secret, second_path), **same_path_proof})

    assert answer.status_code == 200, answer.get_json()  # genuine call; no address lent
    assert _denial_ip(second) == SOCKET


def test_a_forged_signature_with_a_fresh_proof_burns_no_nonce(
    api_app: Flask, secret: str, store: redis.Redis
) -> None:
    request_id = _pending(api_app)
    path = f"{REQUESTS}/{request_id}/deny"
    forged = _signed("not-the-shared-secret-" + "x" * 40, path)

    answer = _deny(api_app, path, {**forged, **_proof(secret, path)})

    assert answer.status_code == 401
    assert answer.get_json()["message"] == "Bad signature."
    assert store.exists(auth.call_nonce_key(forged[signing.HEADER_NONCE])) == 0
    assert _denial_ip(request_id) is None
