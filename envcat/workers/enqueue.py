"""Publishing a task, with one answer for a broker that is down (issue #13).

Every caller that enqueues after a committed change needs the same three
things: one list of what a down broker raises, a way to undo what it recorded
(so a retry is not mistaken for a duplicate, or a waiting CLI stops waiting),
and a 503 the client knows to retry.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from envcat.services.errors import Unavailable

# What publishing to a broker that is down raises: kombu wraps most of it, a Redis
# broker can raise its own errors, and a refused connection is an OSError.
BROKER_ERRORS: tuple[type[BaseException], ...] = (OperationalError, RedisError, OSError)
log = logging.getLogger("envcat.enqueue")


def enqueue(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    *,
    on_failure: Callable[[], None],
    message: str,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Publish `task(*args)`; if the broker is down, run `on_failure` and raise a 503."""
    try:
        task.apply_async(args, **dict(options or {}))
    except Exception as error:
        if not broker_gone(error):
            raise
        on_failure()
        raise Unavailable(message) from None


def broker_gone(error: BaseException) -> bool:
    """True for what a broker that is down or going away raises.

    Besides BROKER_ERRORS: during a Sentinel failover one greenlet's failed call closes
    the shared channel while another is inside kombu, which then reads
    `self.connection.client` of a channel whose connection is already None. That
    AttributeError, raised in kombu's own transport, is the broker going away, not a bug
    of the caller's (it was a 500 in tests/hardening/test_sentinel_failover.py)."""
    if isinstance(error, BROKER_ERRORS):
        return True
    if not isinstance(error, AttributeError):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    if frames and "/kombu/transport/" in frames[-1].filename:
        log.warning("broker channel closed under a call", extra={"error_type": "AttributeError"})
        return True
    return False
