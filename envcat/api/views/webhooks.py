"""Clerk webhooks, Svix-signed (DESIGN §5): verify, record the svix-id, enqueue, answer 202."""

from __future__ import annotations

from flask import Blueprint, request

from envcat.api.openapi import endpoint
from envcat.core.schemas.clerk import ClerkWebhookAck
from envcat.services import integrity, metrics, provisioning
from envcat.services.runtime import current
from envcat.workers import tasks
from envcat.workers.enqueue import enqueue

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1")


def _receive() -> ClerkWebhookAck:
    secret = current().settings.clerk_webhook_secret
    # No body parsing before this line: the signature covers the raw bytes.
    event = provisioning.verify_event(
        secret.get_secret_value() if secret else None, request.get_data(), dict(request.headers)
    )
    if event is None:
        return ClerkWebhookAck(ignored=True)
    if not provisioning.record_delivery(event):
        return ClerkWebhookAck(duplicate=True)
    payload = event.payload()
    enqueue(
        tasks.provision_clerk_event,
        (event.id, event.type, payload, integrity.event_mac(event.id, event.type, payload)),
        # Unrecord it: Svix retries on 503, and the retry must not look like a duplicate.
        on_failure=lambda: provisioning.forget_delivery(event.id),
        message="The task queue is unavailable; retry.",
        # worker logs and events show ids only, never the payload's emails and names
        options={"argsrepr": repr((event.id, event.type))},
    )
    return ClerkWebhookAck()


def _outcome(ack: ClerkWebhookAck) -> str:
    return "duplicate" if ack.duplicate else "ignored" if ack.ignored else "accepted"


@endpoint(
    bp,
    "/webhooks/clerk",
    "POST",
    summary="Receive a Clerk event (Svix-signed); provisioning runs in the background",
    auth="svix",
    responses={202: ClerkWebhookAck},
    errors=(401, 503),
)
def clerk_webhook() -> tuple[ClerkWebhookAck, int]:
    """202 once the svix-id is stored and the event enqueued (or known, or not for us)."""
    try:
        ack = _receive()
    except Exception:
        metrics.WEBHOOKS_RECEIVED.labels(outcome="rejected").inc()
        raise
    metrics.WEBHOOKS_RECEIVED.labels(outcome=_outcome(ack)).inc()
    return ack, 202
