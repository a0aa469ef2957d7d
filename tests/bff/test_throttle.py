"""Sign-in throttling counters in a real Redis."""

from __future__ import annotations

import redis

from envcat.bff.throttle import Throttle


def test_pair_limit_blocks_one_ip_and_email_only(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, failure_limit=2, email_failure_limit=5, window=60)
    for _ in range(2):
        assert throttle.retry_after("1.1.1.1", "a@x.test") is None
        throttle.record_failure("1.1.1.1", "a@x.test")
    wait = throttle.retry_after("1.1.1.1", "a@x.test")
    assert wait is not None and 0 < wait <= 60
    assert throttle.retry_after("2.2.2.2", "a@x.test") is None
    assert throttle.retry_after("1.1.1.1", "b@x.test") is None
    throttle.clear("1.1.1.1", "a@x.test")
    assert throttle.retry_after("1.1.1.1", "a@x.test") is None


def test_email_limit_holds_across_client_addresses(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, failure_limit=100, email_failure_limit=3, window=60)
    for n in range(3):
        throttle.record_failure(f"10.0.0.{n}", "victim@x.test")
    assert throttle.retry_after("10.9.9.9", "victim@x.test") is not None
    assert throttle.retry_after("10.9.9.9", "other@x.test") is None


def test_every_counter_expires_and_names_no_email(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, window=60, signup_limit=2)
    throttle.record_failure("1.1.1.1", "a@x.test")
    assert [throttle.allow_signup("1.1.1.1") for _ in range(3)] == [True, True, False]
    keys = list(redis_client.scan_iter("bff:*"))
    assert len(keys) == 3
    for key in keys:
        assert 0 < redis_client.ttl(key) <= 3600
        assert "a@x.test" not in str(key) and "1.1.1.1" not in str(key)
