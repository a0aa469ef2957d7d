"""The shared token bucket: many threads (standing in for workers) never exceed its limit
in any one-second window; a pause stops all of them."""

from __future__ import annotations

import threading
import time
from collections import Counter

import redis

from envcat.services.connectors.ratelimit import bucket


def test_threads_sharing_a_bucket_stay_within_the_limit_per_second(
    redis_client: redis.Redis,
) -> None:
    shared = bucket(redis_client, "t", "aws", "eu-west-1", "write", 30)
    grants: list[float] = []
    lock = threading.Lock()
    # The window starts once every thread runs: on a loaded machine starting six threads
    # once took long enough that the grants spanned no full second at all.
    started = threading.Barrier(7)
    stop: list[float] = []

    def worker() -> None:  # the pool is thread-safe: each thread takes its own connection
        started.wait()
        while time.monotonic() < stop[0]:
            shared.take()
            with lock:
                grants.append(time.time())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    stop.append(time.monotonic() + 4.2)  # at least three whole seconds
    started.wait()
    for thread in threads:
        thread.join()
    per_second = Counter(int(at) for at in grants)
    full = [
        count
        for second, count in per_second.items()
        if second not in (min(per_second), max(per_second))
    ]
    assert max(per_second.values()) <= 30
    assert full and min(full) >= 20  # and it is used, not starved (refill is 27/s)


def test_a_pause_holds_every_taker(redis_client: redis.Redis) -> None:
    shared = bucket(redis_client, "t", "aws", "eu-west-1", "write", 1000)
    shared.pause(0.5)
    started = time.monotonic()
    shared.take()
    assert time.monotonic() - started >= 0.45
