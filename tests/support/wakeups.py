"""Long polls run in threads below the HTTP layer, and the Redis connections they hold.

For the wake-up tests (tests/services/test_wakeups.py): each poll is a real
`lifecycle.wait` in its own app context, as the threaded test servers run it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from flask import Flask

from envcat.core.schemas.requests import WaitResult
from envcat.services import audit
from envcat.services.access_requests import lifecycle


@dataclass
class Poll:
    """One long poll in a thread: its answer (or error) and when it came."""

    thread: threading.Thread | None = None
    results: list[WaitResult] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    answered_at: float = 0.0

    def answer(self, seconds: float = 15.0) -> WaitResult:
        """The poll's answer, waiting at most `seconds` for it; raises its error if it failed."""
        assert self.thread is not None
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the poll did not answer"
        if self.errors:
            raise self.errors[0]
        return self.results[0]


def start_poll(app: Flask, request_id: str, poll_token: str, timeout: int) -> Poll:
    """Start `lifecycle.wait(..., timeout)` in a thread with its own app context."""
    poll = Poll()

    def run() -> None:
        with app.app_context():
            try:
                poll.results.append(lifecycle.wait(request_id, poll_token, timeout, audit.Origin()))
            except BaseException as exc:  # handed to the test by Poll.answer
                poll.errors.append(exc)
            poll.answered_at = time.monotonic()

    poll.thread = threading.Thread(target=run, daemon=True)
    poll.thread.start()
    return poll


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Return once `condition()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def pubsub_clients(r: redis.Redis) -> set[str]:
    """Ids of the connections subscribed to something."""
    return {str(c["id"]) for c in r.client_list(_type="pubsub")}


@contextmanager
def refusing_new_connections(
    r: redis.Redis, killing: AbstractSet[str] = frozenset()
) -> Iterator[None]:
    """Redis refuses new connections in the block, after closing the connections `killing`
    (`maxclients` at the count left, so none of them can come back)."""
    before = str(r.config_get("maxclients")["maxclients"])
    limit = int(r.info("clients")["connected_clients"]) - len(killing)
    r.config_set("maxclients", limit)
    try:
        for client_id in killing:
            r.client_kill_filter(_id=client_id)
        # A connection that was closing when counted frees its slot a moment later, which
        # a newcomer could then take (a flaky CI run): follow the count down meanwhile.
        settle = time.monotonic() + 0.3
        while time.monotonic() < settle:
            if (connected := int(r.info("clients")["connected_clients"])) < limit:
                limit = connected
                r.config_set("maxclients", limit)
            time.sleep(0.02)
        yield
    finally:
        r.config_set("maxclients", before)
