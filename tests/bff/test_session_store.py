"""envcat.bff.sessions against a real Redis."""

from __future__ import annotations

import hashlib

import redis

from envcat.bff.sessions import PREFIX, USER_PREFIX, SessionStore


def test_a_record_round_trips_and_is_keyed_by_a_hash(redis_client: redis.Redis) -> None:
    store = SessionStore(redis_client, lifetime=600, clock=lambda: 1234.5)
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
    store = SessionStore(redis_client)
    first, second = (store.create("usr_a", "usr_a", "a@x.test", "owner") for _ in range(2))
    store.revoke(first)
    assert store.load(first) is None and store.load(second) is not None
    assert store.count("usr_a") == 1
    store.revoke(first)  # twice is harmless


def test_revoke_user_keeps_the_named_session_and_spares_other_users(
    redis_client: redis.Redis,
) -> None:
    store = SessionStore(redis_client)
    mine = [store.create("usr_a", "usr_a", "a@x.test", "owner") for _ in range(3)]
    theirs = store.create("usr_b", "usr_b", "b@x.test", "owner")
    assert store.revoke_user("usr_a", keep=mine[0]) == 2
    assert [store.load(s) is not None for s in mine] == [True, False, False]
    assert store.load(theirs) is not None
    assert store.revoke_user("usr_a") == 1
    assert store.count("usr_a") == 0 and store.revoke_user("usr_a") == 0


def test_count_prunes_records_that_expired(redis_client: redis.Redis) -> None:
    store = SessionStore(redis_client)
    alive, expired = (store.create("usr_a", "usr_a", "a@x.test", "owner") for _ in range(2))
    redis_client.delete(PREFIX + hashlib.sha256(expired.encode()).hexdigest())  # as a TTL would
    assert store.count("usr_a") == 1
    assert redis_client.scard(USER_PREFIX + "usr_a") == 1
    assert store.load(alive) is not None
