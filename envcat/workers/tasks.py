"""Celery tasks: thin adapters that carry ids and delegate to services (STYLE)."""

from __future__ import annotations

from celery import shared_task

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
