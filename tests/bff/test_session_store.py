"""envcat.bff.sessions against a real Redis."""

from __future__ import annotations

import hashlib

import redis

from envcat.bff.sessions import PREFIX, USER_PREFIX, SessionStore, record_mac_key

MAC_KEY = record_mac_key("test-session-secret")


def test_a_record_round_trips_and_is_keyed_by_a_hash(redis_client: redis.Redis) -> None:
    store = SessionStore(redis_client, MAC_KEY, lifetime=600, clock=lambda: 1234.5)
    session_id = store.create("usr_a", "usr_a", "a@x.test", "owner")
    assert len(session_id) >= 43  # 256 random bits
    record = store.load(session_id)
    assert record is not None
    assert (record.user_id, record.tenant_id, record.email, record.role) == (
        "usr_a",
        "usr_a",
        "a@x.test",
        "owner",
    )
    assert record.created_at == 1234.5
    key = PREFIX + hashlib.sha256(session_id.encode()).hexdigest()
    assert list(redis_client.scan_iter(f"{PREFIX}*")) != []
    assert not any(session_id in name for name in redis_client.scan_iter("*"))
    assert 0 < redis_client.ttl(key) <= 600
    assert 0 < redis_client.ttl(USER_PREFIX + "usr_a") <= 600
    assert store.load("not-a-session") is None


def test_revoke_ends_one_session_only(redis_client: redis.Redis) -> None:
    store = SessionStore(redis_client, MAC_KEY)
    first, second = (store.create("usr_a", "usr_a", "a@x.test", "owner") for _ in range(2))
    store.revoke(first)
    assert store.load(first) is None and store.load(second) is not None
    assert store.count("usr_a") == 1
    store.revoke(first)  # twice is harmless


def test_revoke_user_keeps_the_named_session_and_spares_other_users(
    redis_client: redis.Redis,
) -> None:
    store = SessionStore(redis_client, MAC_KEY)
    mine = [store.create("usr_a", "usr_a", "a@x.test", "owner") for _ in range(3)]
    theirs = store.create("usr_b", "usr_b", "b@x.test", "owner")
    assert store.revoke_user("usr_a", keep=mine[0]) == 2
    assert [store.load(s) is not None for s in mine] == [True, False, False]
    assert store.load(theirs) is not None
    assert store.revoke_user("usr_a") == 1
    assert store.count("usr_a") == 0 and store.revoke_user("usr_a") == 0


def test_count_prunes_records_that_expired(redis_client: redis.Redis) -> None:
    store = SessionStore(redis_client, MAC_KEY)
    alive, expired = (store.create("usr_a", "usr_a", "a@x.test", "owner") for _ in range(2))
    redis_client.delete(PREFIX + hashlib.sha256(expired.encode()).hexdigest())  # as a TTL would
    assert store.count("usr_a") == 1
    assert redis_client.scard(USER_PREFIX + "usr_a") == 1
    assert store.load(alive) is not None


def test_an_edited_record_is_no_session(redis_client: redis.Redis) -> None:
    """Issue #23: a writer to Redis cannot turn its own record into another user's."""
    store = SessionStore(redis_client, MAC_KEY)
    session_id = store.create("u-mallory", "t-mallory", "m@example.test", "owner")
    (key,) = redis_client.smembers("bff:sess:user:u-mallory")
    redis_client.hset(key, mapping={"user": "u-victim", "tenant": "t-victim"})
    assert store.load(session_id) is None
    other = SessionStore(redis_client, record_mac_key("another-secret"))
    fresh = store.create("u-ann", "t-ann", "a@example.test", "member")
    assert other.load(fresh) is None  # a record MACed under another key is refused too
    assert store.load(fresh) is not None
