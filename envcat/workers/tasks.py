"""Celery tasks: thin adapters that carry ids and delegate to services (STYLE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import redis
from celery import shared_task
from sqlalchemy.exc import OperationalError

from envcat.services import audit_sinks, provisioning, rotation
from envcat.services.access_requests import delivery, sweep
from envcat.services.runtime import current

PING_REPLY_TTL = 60


@shared_task(name="envcat.ping", acks_late=True)
def ping(reply_key: str) -> None:
    """Push to `reply_key` in Redis: a no-op round trip for health checks and benchmarks."""
    r = current().redis
    pipe = r.pipeline(transaction=True)
    pipe.lpush(reply_key, "pong")
    pipe.expire(reply_key, PING_REPLY_TTL)
    pipe.execute()


# Only these are worth retrying: a backend that is briefly away. A bad payload is a bug.
TRANSIENT_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OperationalError,
)


class RetryOptions(TypedDict):
    """Task options of every state-changing task: late acks, bounded transient retries."""

    acks_late: bool
    reject_on_worker_lost: bool
    autoretry_for: Sequence[type[BaseException]]
    retry_backoff: bool | int
    retry_backoff_max: int
    retry_jitter: bool
    max_retries: int


RETRY_OPTIONS: RetryOptions = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name="envcat.encrypt_from_bundle", **RETRY_OPTIONS)
def encrypt_from_bundle(request_id: str, approval_mac: str) -> None:
    """Seal the approved keys to the request's CLI key; a repeated message is a no-op.

    The message carries the request id and the approval's integrity MAC only: who
    approved which bundle is read from Redis and checked against the MAC.
    """
    try:
        delivery.encrypt_from_bundle(request_id, approval_mac)
    except TRANSIENT_ERRORS:
        raise
    except Exception:
        # A bug, not a passing outage: tell the waiting CLI, then fail loudly.
        delivery.fail_unexpectedly(request_id)
        raise


@shared_task(name="envcat.sweep_expired_requests", **RETRY_OPTIONS)
def sweep_expired_requests() -> None:
    """Prune expired requests and audit approvals that nobody collected."""
    sweep.sweep_expired_requests()


@shared_task(name="envcat.rotate_kms", **RETRY_OPTIONS)
def rotate_kms(batch_size: int) -> None:
    """Re-encrypt up to `batch_size` values under the primary keyring key."""
    rotation.rotate_batch(batch_size)


@shared_task(name="envcat.provision_clerk_event", **RETRY_OPTIONS)
def provision_clerk_event(event_id: str, event_type: str, data: dict[str, Any], mac: str) -> None:
    """Apply one recorded Clerk event (idempotent by svix-id; a re-run is a no-op)."""
    provisioning.apply_event(event_id, event_type, data, mac)


@shared_task(name="envcat.ship_audit_sinks", **RETRY_OPTIONS)
def ship_audit_sinks() -> None:
    """Beat: one `ship_audit` per workspace whose syslog sink is behind its log."""
    for tenant_id in audit_sinks.due_tenants():
        ship_audit.delay(tenant_id)


@shared_task(name="envcat.ship_audit", **RETRY_OPTIONS)
def ship_audit(tenant_id: str) -> None:
    """Send one workspace's new audit events to its collector; a failure waits for the next beat.

    A collector outage is recorded on the sink, not retried here: the cursor keeps the
    place, and the next round (AUDIT_SINK_INTERVAL) sends the same events again.
    """
    audit_sinks.ship(tenant_id)
