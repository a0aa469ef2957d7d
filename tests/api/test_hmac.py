"""Every way of tampering with a bff signature is refused on the signed request endpoints."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from envcat.core import signing
from envcat.core.keys import new_shared_secret
from envcat.core.settings import Settings
from tests.support.api import REQUESTS, Cli, SeedKey, audit_actions, seed_bundle
from tests.support.signed import add_member

TENANT = "t-acme"
USER = "u-owner"


@pytest.fixture
def secret(settings: Settings) -> str:
    return settings.bff_shared_secret.get_secret_value()


@pytest.fixture
def request_id(api_app: Flask) -> str:
    add_member(USER, TENANT)
    return Cli.start(api_app.test_client()).id


def _send(
    client: FlaskClient,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> Any:
    return client.open(
        path, method=method, data=body, headers={**headers, "Content-Type": "application/json"}
    )


def _headers(secret: str, method: str, path: str, body: bytes, **kw: Any) -> dict[str, str]:
    path_only, _, query = path.partition("?")
    user, tenant = kw.pop("user", USER), kw.pop("tenant", TENANT)
    return signing.sign_headers(secret, user, tenant, method, path_only, query, body, **kw)


def _cases(secret: str, request_id: str) -> dict[str, tuple[str, str, bytes, dict[str, str]]]:
    deny = f"{REQUESTS}/{request_id}/deny"
    approve = f"{REQUESTS}/{request_id}/encrypt-from-bundle"
    body = json.dumps({"bundle_id": "b", "include_keys": ["A"]}).encode()
    good = _headers(secret, "POST", deny, b"")
    cases: dict[str, tuple[str, str, bytes, dict[str, str]]] = {}
    for name in signing.SIGNED_HEADERS:
        cases[f"missing {name}"] = ("POST", deny, b"", {k: v for k, v in good.items() if k != name})
    now = time.time()
    cases.update(
        {
            "wrong secret": ("POST", deny, b"", _headers(new_shared_secret(), "POST", deny, b"")),
            "changed path": (
                "POST",
                deny,
                b"",
                _headers(secret, "POST", f"{REQUESTS}/{'B' * 32}/deny", b""),
            ),
            "added query": ("POST", deny + "?x=1", b"", _headers(secret, "POST", deny, b"")),
            "changed query": (
                "POST",
                deny + "?x=2",
                b"",
                _headers(secret, "POST", deny + "?x=1", b""),
            ),
            "changed body": (
                "POST",
                approve,
                body.replace(b'"A"', b'"B"'),
                _headers(secret, "POST", approve, body),
            ),
            "changed method": ("POST", deny, b"", _headers(secret, "GET", deny, b"")),
            "timestamp 61 s old": (
                "POST",
                deny,
                b"",
                _headers(secret, "POST", deny, b"", now=now - 61),
            ),
            # Built before the calls run: leave room for a slow, loaded machine.
            "timestamp 90 s ahead": (
                "POST",
                deny,
                b"",
                _headers(secret, "POST", deny, b"", now=now + 90),
            ),
            "user id with a space": (
                "POST",
                deny,
                b"",
                _headers(secret, "POST", deny, b"", user="u owner"),
            ),
            "user id too long": (
                "POST",
                deny,
                b"",
                _headers(secret, "POST", deny, b"", user="u" * 129),
            ),
            "tenant id with a slash": (
                "POST",
                deny,
                b"",
                _headers(secret, "POST", deny, b"", tenant="t/acme"),
            ),
            "nonce too short": (
                "POST",
                deny,
                b"",
                _headers(secret, "POST", deny, b"", nonce="abc"),
            ),
            "upper-case signature": (
                "POST",
                deny,
                b"",
                {**good, signing.HEADER_SIGNATURE: good[signing.HEADER_SIGNATURE].upper()},
            ),
            "non-numeric timestamp": (
                "POST",
                deny,
                b"",
                {**good, signing.HEADER_TIMESTAMP: "soon"},
            ),
            "the bff's own identity": (
                "POST",
                deny,
                b"",
                _headers(
                    secret, "POST", deny, b"", user=signing.BFF_USER_ID, tenant=signing.NO_TENANT
                ),
            ),
        }
    )
    return cases


def _reason(case: str) -> str:
    """The check each tampering must trip (so a case cannot pass for an unrelated reason)."""
    if case.startswith("missing"):
        return "Missing"
    if case.startswith("timestamp"):
        return "outside the allowed window"
    if case.startswith(("user id", "tenant id")):
        return "Malformed identity"
    if case in ("nonce too short", "non-numeric timestamp"):
        return "Malformed signature"
    if case == "the bff's own identity":
        return "bff identity"
    return "Bad signature"


def test_every_tampered_signature_is_refused_with_401(
    api_app: Flask, secret: str, request_id: str
) -> None:
    client = api_app.test_client()
    for case, (method, path, body, headers) in _cases(secret, request_id).items():
        response = _send(client, method, path, body, headers)
        assert response.status_code == 401, case
        assert response.get_json()["error"] == "unauthorized", case
        assert _reason(case) in response.get_json()["message"], case
    # nothing was decided by any of them
    assert client.get(f"{REQUESTS}/{request_id}/context").get_json()["status"] == "pending"
    assert audit_actions(TENANT) == []


def test_a_correct_signature_is_accepted_once(api_app: Flask, secret: str, request_id: str) -> None:
    client = api_app.test_client()
    deny = f"{REQUESTS}/{request_id}/deny"
    headers = _headers(secret, "POST", deny, b"")
    accepted = _send(client, "POST", deny, b"", headers)
    assert accepted.status_code == 200
    replayed = _send(client, "POST", deny, b"", headers)
    assert replayed.status_code == 401  # the nonce was spent, before any 409
    assert replayed.get_json()["message"] == "Nonce already used."
    assert audit_actions(TENANT) == [("request.denied", request_id)]


def test_a_correct_signature_with_a_body_and_query_is_accepted(
    api_app: Flask, secret: str, request_id: str
) -> None:
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("A", "a")])
    path = f"{REQUESTS}/{request_id}/encrypt-from-bundle?source=approval-page"
    body = json.dumps({"bundle_id": bundle_id, "include_keys": ["A"]}).encode()
    response = _send(
        api_app.test_client(), "POST", path, body, _headers(secret, "POST", path, body)
    )
    assert response.status_code == 202
