"""Signed Clerk (Svix) webhooks sent to a real api, and the api they are sent to."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from svix.webhooks import Webhook
from werkzeug.test import TestResponse

from envcat.api import create_app
from envcat.core.settings import Settings
from envcat.models import WebhookEvent, db
from tests.support.clerk_events import (
    clerk_event,
    new_id,
)
from tests.support.databases import migrated
from tests.support.signed import SignedClient

URL = "/api/v1/webhooks/clerk"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def send_and_wait(app: Flask, event_type: str, data: dict[str, Any]) -> None:
    msg_id = new_id("msg")
    response = post_event(app, event_type, data, msg_id=msg_id)
    assert response.status_code == 202, response.json
    wait_until(lambda: processed(msg_id))


def signed(app: Flask, settings: Settings, user_id: str, tenant_id: str) -> SignedClient:
    secret = settings.bff_shared_secret.get_secret_value()
    return SignedClient(app.test_client(), secret, user_id, tenant_id)


def api_on(database_url: str, settings: Settings) -> Flask:
    migrated(database_url)
    return create_app(settings.model_copy(update={"database_url": database_url}))


def post_event(app: Flask, event_type: str, data: dict[str, Any], **kw: Any) -> TestResponse:
    body, headers = sign(clerk_event(event_type, data), **kw)
    return app.test_client().post(URL, data=body, headers=headers)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.rollback()  # see what the worker committed
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def processed(event_id: str) -> bool:
    row = db.session.get(WebhookEvent, event_id)
    return row is not None and row.processed_at is not None


def sign(
    payload: dict[str, Any] | bytes,
    *,
    msg_id: str | None = None,
    at: datetime | None = None,
    secret: str = WEBHOOK_SECRET,
) -> tuple[bytes, dict[str, str]]:
    """A delivery signed by the svix library's own signer, as Clerk's sender signs it."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
    msg_id = msg_id or new_id("msg")
    at = at or datetime.now(UTC)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body.decode("utf-8")),
        "Content-Type": "application/json",
    }
    return body, headers
