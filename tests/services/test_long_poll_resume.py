"""A long poll whose Redis connection breaks resumes on the next connection (issue #21).

Only under Sentinel (`resume=True`): with one Redis, a waiting CLI hears of the outage
at once (tests/api/test_availability.py).
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from envcat.core.settings import Settings
from envcat.core.wire import MAX_WAIT_SECONDS
from envcat.services.access_requests import store
from envcat.services.runtime import make_redis

WAIT_SECONDS = 10.0


def _blocking_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(
        redis_url, decode_responses=True, socket_timeout=MAX_WAIT_SECONDS + 10
    )


def test_a_wait_whose_connection_is_killed_still_sees_the_wake_up(
    redis_url: str, redis_client: redis.Redis
) -> None:
    waiter = _blocking_client(redis_url)
    woken: list[bool] = []
    elapsed: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        woken.append(store.wait_for_change(waiter, "req-resume", WAIT_SECONDS, resume=True))
        elapsed.append(time.monotonic() - started)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)  # the waiter is inside BLPOP now
    # What a failover does to it: the connection goes away under the blocked command.
    assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
    time.sleep(0.3)
    redis_client.lpush(store.wake_key("req-resume"), "1")
    thread.join(timeout=WAIT_SECONDS + 5)
    waiter.close()
    assert woken == [True]  # resumed and saw the wake-up, rather than a 503 or a timeout
    assert elapsed[0] < WAIT_SECONDS / 2


def test_a_wait_that_cannot_reconnect_ends_at_its_deadline(settings: Settings) -> None:
    unreachable = make_redis(
        settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}), blocking=True
    )
    started = time.monotonic()
    # "still pending" at the deadline: the CLI polls again
    assert store.wait_for_change(unreachable, "req-gone", 1.0, resume=True) is False
    assert time.monotonic() - started < 1.5  # not redis-py's ~4.5 s of retries past it


def test_without_sentinel_a_broken_wait_fails_at_once(settings: Settings) -> None:
    unreachable = make_redis(
        settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}), blocking=True
    )
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        store.wait_for_change(unreachable, "req-gone", 5.0)
    assert time.monotonic() - started < 1.0
