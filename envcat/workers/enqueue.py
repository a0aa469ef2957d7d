"""Publishing a task, with one answer for a broker that is down (issue #13).

Every caller that enqueues after a committed change needs the same three
things: one list of what a down broker raises, a way to undo what it recorded
(so a retry is not mistaken for a duplicate, or a waiting CLI stops waiting),
and a 503 the client knows to retry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery import Task
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from envcat.services.errors import Unavailable

# What publishing to a broker that is down raises: kombu wraps most of it, a Redis
# broker can raise its own errors, and a refused connection is an OSError.
BROKER_ERRORS: tuple[type[BaseException], ...] = (OperationalError, RedisError, OSError)


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
    except BROKER_ERRORS:
        on_failure()
        raise Unavailable(message) from None
