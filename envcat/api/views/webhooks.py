"""Clerk webhooks, Svix-signed (DESIGN §5): verify, record the svix-id, enqueue, answer 202."""

from __future__ import annotations

from flask import Blueprint, request
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from envcat.api.openapi import endpoint
from envcat.core.schemas.clerk import ClerkWebhookAck
from envcat.services import metrics, provisioning
from envcat.services.errors import Unavailable
from envcat.services.runtime import current
from envcat.workers import tasks

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1")

# What publishing to a broker that is down raises (kombu wraps most of it).
ENQUEUE_ERRORS = (BrokerError, RedisError, OSError)


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
    try:
        # argsrepr: worker logs and events show ids only, never the payload's emails and
        # names (a Celery 5 option that celery-types does not declare, hence the ignore).
        tasks.provision_clerk_event.apply_async(  # type: ignore[call-arg]
            (event.id, event.type, event.payload()), argsrepr=repr((event.id, event.type))
        )
    except ENQUEUE_ERRORS:
        # Unrecord it: Svix retries on 503, and the retry must not look like a duplicate.
        provisioning.forget_delivery(event.id)
        raise Unavailable("The task queue is unavailable; retry.") from None
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
