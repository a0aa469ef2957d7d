"""Issue #13: `no-store` is set once, on every api reply (signed, internal, public, errors)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from envcat.bff.apiclient import BFF_SIGNER
from tests.support.signed import SignedClient


def test_every_kind_of_api_reply_forbids_caching(
    api_client: FlaskClient, signed_as: Any, settings: Any
) -> None:
    member = signed_as("u-cache", "t-cache", "member")
    bff = SignedClient(
        api_client,
        settings.bff_shared_secret.get_secret_value(),
        BFF_SIGNER.user_id,
        BFF_SIGNER.tenant_id,
    )
    replies = {
        "public health": api_client.get("/healthz"),
        "public unknown request": api_client.get(f"/api/v1/requests/{'x' * 22}/context"),
        "bad create": api_client.post("/api/v1/requests", json={}),
        "signed /me": member.get("/api/v1/me"),
        "signed /audit": member.get("/api/v1/audit"),
        "signed /workspaces": member.get("/api/v1/workspaces"),
        "signed 403": member.post("/api/v1/bundles", {"name": "x/y"}),
        "unsigned signed-route": api_client.get("/api/v1/bundles"),
        "internal sign-in": bff.post(
            "/api/v1/internal/local-auth/sign-in", {"email": "no@example.test", "password": "p"}
        ),
        "server key": api_client.get("/api/v1/server-key"),
    }
    for name, reply in replies.items():
        assert reply.headers.get("Cache-Control") == "no-store", (name, reply.status_code)
