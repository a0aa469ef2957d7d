"""How far behind the approval workers are (issue #22): the approvals queue's depth, sampled.

The api asks before it accepts new work. Asking the broker on every call would add
a round trip to the hot path, so one sample serves every caller of a process for
`every` seconds; a broker that cannot be asked gives no answer (None), and the
caller then refuses nothing: backpressure must never turn into an outage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from celery import Celery

from envcat.workers.enqueue import broker_gone
from envcat.workers.observability import queue_depth

APPROVALS_QUEUE = "approvals"


class Backlog:
    """A cached `queue_depth` of one queue, shared by the threads of a process."""

    def __init__(
        self,
        app: Celery,
        queue: str = APPROVALS_QUEUE,
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app, self._queue, self._every, self._clock = app, queue, every, clock
        self._lock = threading.Lock()
        self._sampled_at = float("-inf")
        self._depth: int | None = None

    def depth(self) -> int | None:
        """Messages waiting, at most `every` seconds old; None when the broker did not say."""
        with self._lock:
            now = self._clock()
            if now - self._sampled_at >= self._every:
                self._sampled_at = now
                self._depth = self._sample()
            return self._depth

    def _sample(self) -> int | None:
        try:
            with self._app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=1)
                return queue_depth(connection, self._queue)
        except Exception as error:
            if not broker_gone(error):
                raise
            return None
