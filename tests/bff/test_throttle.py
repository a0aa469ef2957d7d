"""Sign-in throttling in a real Redis, with an injected clock (no sleeping)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis

from envcat.bff.throttle import (
    REASON_DELAY,
    REASON_NETWORK,
    REASON_PAIR,
    Throttle,
    network_of,
)


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _fail(throttle: Throttle, ip: str, email: str) -> None:
    assert throttle.admit(ip, email) is None, (ip, email)
    throttle.record_failure(ip, email)


def test_pair_limit_blocks_one_ip_and_email_only(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, failure_limit=2, free_email_failures=100, window=60)
    for _ in range(2):
        _fail(throttle, "1.1.1.1", "a@x.test")
    refusal = throttle.admit("1.1.1.1", "a@x.test")
    assert refusal is not None and refusal.reason == REASON_PAIR
    assert 0 < refusal.retry_after <= 60
    assert throttle.admit("2.2.2.2", "a@x.test") is None
    assert throttle.admit("1.1.1.1", "b@x.test") is None
    throttle.clear("1.1.1.1", "a@x.test")
    assert throttle.admit("1.1.1.1", "a@x.test") is None


def test_network_limit_holds_across_emails(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, ip_failure_limit=4, free_email_failures=100, window=60)
    for n in range(4):
        _fail(throttle, "10.0.0.1", f"user{n}@x.test")
    refusal = throttle.admit("10.0.0.1", "fresh@x.test")
    assert refusal is not None and refusal.reason == REASON_NETWORK
    assert throttle.admit("10.0.0.2", "fresh@x.test") is None


def test_ipv6_hosts_of_one_64_share_a_network() -> None:
    assert (
        network_of("2001:db8:1:2::1") == network_of("2001:db8:1:2:ffff::9") == ("2001:db8:1:2::/64")
    )
    assert network_of("2001:db8:1:3::1") != network_of("2001:db8:1:2::1")
    assert network_of("::ffff:192.0.2.7") == network_of("192.0.2.7") == "192.0.2.7"
    assert network_of("not an ip") == "not an ip"


def test_email_delay_grows_exponentially_for_networks_that_failed(
    redis_client: redis.Redis,
) -> None:
    clock = Clock()
    throttle = Throttle(
        redis_client, failure_limit=1000, free_email_failures=2, taint_after=1, clock=clock
    )
    email, ip = "victim@x.test", "203.0.113.5"
    _fail(throttle, ip, email)
    _fail(throttle, ip, email)  # 2 free failures
    waits = []
    for _ in range(6):
        _fail(throttle, ip, email)
        refusal = throttle.admit(ip, email)
        assert refusal is not None and refusal.reason == REASON_DELAY
        waits.append(refusal.retry_after)
        clock.now += refusal.retry_after
    assert waits == [1, 2, 4, 8, 16, 32]


def test_delay_is_capped_and_decays(redis_client: redis.Redis) -> None:
    clock = Clock()
    throttle = Throttle(
        redis_client,
        failure_limit=1000,
        free_email_failures=0,
        taint_after=1,
        delay_cap=900,
        clock=clock,
    )
    for _ in range(30):
        _fail(throttle, "203.0.113.5", "v@x.test")
        refusal = throttle.admit("203.0.113.5", "v@x.test")
        assert refusal is not None and refusal.retry_after <= 900
        clock.now += refusal.retry_after
    assert refusal is not None and refusal.retry_after == 900
    # Every key expires: 24 h after the last failure the email starts afresh.
    for key in redis_client.scan_iter("bff:signin:*"):
        assert 0 < redis_client.ttl(key) <= 24 * 3600


def test_a_clean_network_is_never_delayed_by_the_email_counter(
    redis_client: redis.Redis,
) -> None:
    clock = Clock()
    throttle = Throttle(redis_client, free_email_failures=0, taint_after=3, clock=clock)
    email = "owner@x.test"
    for n in range(200):  # an attacker rotating through 200 addresses
        ip = f"198.18.{n // 250}.{n % 250}"
        for _ in range(3):
            if throttle.admit(ip, email) is None:
                throttle.record_failure(ip, email)
    attacker = throttle.admit("198.18.0.1", email)
    assert attacker is not None and attacker.reason == REASON_DELAY
    assert attacker.retry_after == 900
    assert throttle.admit("192.0.2.44", email) is None  # the owner's own network
    assert throttle.admit("192.0.2.44", email) is None  # and again: nothing was claimed


def test_one_admitted_attempt_claims_the_slot_for_concurrent_ones(
    redis_client: redis.Redis,
) -> None:
    clock = Clock()
    throttle = Throttle(redis_client, free_email_failures=0, taint_after=1, clock=clock)
    ips = [f"198.18.1.{n}" for n in range(20)]
    for ip in ips:
        if throttle.admit(ip, "v@x.test") is None:
            throttle.record_failure(ip, "v@x.test")
    clock.now += 10_000  # the delay has passed: exactly one tainted attempt may go now
    admitted: list[str] = []
    barrier = threading.Barrier(len(ips))

    def attempt(ip: str) -> None:
        barrier.wait()
        if throttle.admit(ip, "v@x.test") is None:
            admitted.append(ip)

    threads = [threading.Thread(target=attempt, args=(ip,)) for ip in ips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 1


def test_every_counter_expires_and_names_no_email(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, window=60, signup_limit=2)
    throttle.record_failure("1.1.1.1", "a@x.test")
    assert [throttle.allow_signup("1.1.1.1") for _ in range(3)] == [True, True, False]
    keys = list(redis_client.scan_iter("bff:*"))
    assert len(keys) == 5
    for key in keys:
        assert 0 < redis_client.ttl(key) <= 24 * 3600
        assert "a@x.test" not in str(key) and "1.1.1.1" not in str(key)
        if redis_client.type(key) == "hash":
            assert "a@x.test" not in str(redis_client.hgetall(key))
