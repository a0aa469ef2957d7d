"""The Redis request store against a real Redis."""

import base64
import json
import math
import threading
import time

import redis

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.usercode import user_code
from envcat.services.access_requests import store
from tests.support.requests import as_made_before_upgrade, expire_now


def _new(
    r: redis.Redis, ttl: int = 60, *, ip: str = "198.51.100.7", cap: int = 100
) -> tuple[store.AccessRequest, str]:
    pub = encode_public_key(generate_keypair())
    new = store.new_request(ttl)
    request = store.create(
        r,
        new,
        ttl=ttl,
        cli_pub=pub,
        tenant_id="t1",
        workspace="acme",
        mac="store-tests-do-not-check-macs",
        client_ip=ip,
        max_per_ip=cap,
        bundle="production/api",
        template_keys=["A"],
        context={"hostname": "box"},
    )
    assert request is not None
    return request, new.poll_token


def _approval(tenant: str = "t1", user: str = "u1", bundle: str = "b1") -> store.Approval:
    return store.Approval(tenant, user, bundle, ("A",), 1700000000.5)


def test_create_stores_only_hashes_and_public_data(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client)
    assert len(base64.urlsafe_b64decode(request.id + "==")) * 8 >= 128
    raw = redis_client.hgetall(store.request_key(request.id))
    assert token not in str(raw)
    assert raw["pth"] == store.hash_poll_token(token)
    assert request.user_code == user_code(request.id, request.cli_pub)
    assert 55 <= redis_client.ttl(store.request_key(request.id)) <= 60
    assert store.get(redis_client, request.id) == request
    assert store.pending_count(redis_client) == 1


def test_poll_requires_the_right_token(redis_client: redis.Redis) -> None:
    request, _ = _new(redis_client)
    assert store.take(redis_client, request.id, "wrong").status == "bad_token"
    assert store.cancel_request(redis_client, request.id, "wrong").outcome == "bad_token"
    assert store.get(redis_client, request.id) is not None


def test_ready_is_taken_exactly_once(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client)
    assert store.take(redis_client, request.id, token).status == "pending"
    assert store.mark_ready(
        redis_client,
        request.id,
        ciphertext_b64="c2VhbGVk",
        approval=_approval("t1", "u1", "b1"),
    )
    first = store.take(redis_client, request.id, token)
    assert first.status == "ready"
    assert first.ciphertext == "c2VhbGVk"
    assert first.approval == _approval("t1", "u1", "b1")
    assert first.tenant_id == "t1"
    assert store.take(redis_client, request.id, token).status == "gone"
    assert redis_client.zcard(store.UNCLAIMED_INDEX) == 0
    assert redis_client.zcard(store.tenant_pending_key("t1")) == 0
    assert redis_client.zcard(store.PENDING_TENANTS) == 0  # its workspace has none left


def test_final_states_do_not_change_again(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client)
    assert store.mark_denied(redis_client, request.id, denied_by="u1")
    assert not store.mark_ready(
        redis_client,
        request.id,
        ciphertext_b64="x",
        approval=_approval("t", "u", "b"),
    )
    assert not store.mark_failed(redis_client, request.id, message="m")
    assert store.take(redis_client, request.id, token).status == "denied"
    assert store.take(redis_client, request.id, token).status == "gone"


def test_failed_carries_its_message(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client)
    assert store.mark_failed(redis_client, request.id, message="the bundle vanished")
    result = store.take(redis_client, request.id, token)
    assert (result.status, result.message, result.ciphertext) == (
        "failed",
        "the bundle vanished",
        None,
    )


def _race_once(redis_url: str, waiters: int) -> list[store.PollResult]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    request, token = _new(client)
    barrier = threading.Barrier(waiters + 1)
    results: list[store.PollResult] = []
    lock = threading.Lock()

    def taker() -> None:
        own = redis.Redis.from_url(redis_url, decode_responses=True)
        barrier.wait()
        for _ in range(500):
            result = store.take(own, request.id, token)
            if result.status != "pending":
                with lock:
                    results.append(result)
                return
            time.sleep(0.001)

    threads = [threading.Thread(target=taker) for _ in range(waiters)]
    for thread in threads:
        thread.start()
    barrier.wait()
    store.mark_ready(
        client,
        request.id,
        ciphertext_b64="Y2lwaGVy",
        approval=_approval("t", "u", "b"),
    )
    for thread in threads:
        thread.join()
    return results


def test_single_use_race_between_twenty_threads(redis_url: str) -> None:
    for _round in range(5):
        results = _race_once(redis_url, 20)
        assert len(results) == 20
        assert [r.status for r in results].count("ready") == 1
        assert [r.status for r in results].count("gone") == 19
        assert all(r.ciphertext is None for r in results if r.status != "ready")


def test_cancel_deletes_and_wakes(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client)
    assert store.cancel_request(redis_client, request.id, token).outcome == "cancelled"
    assert store.get(redis_client, request.id) is None
    assert store.cancel_request(redis_client, request.id, token).outcome == "gone"
    assert redis_client.llen(store.wake_key(request.id)) == 1


def test_polling_too_fast_is_detected(redis_client: redis.Redis) -> None:
    request, _ = _new(redis_client)
    assert not store.is_polling_too_fast(redis_client, request.id, 5)
    assert store.is_polling_too_fast(redis_client, request.id, 5)


def test_expired_requests_vanish_and_are_pruned(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client, ttl=1)
    later = expire_now(redis_client, request.id)
    assert store.get(redis_client, request.id) is None
    assert store.take(redis_client, request.id, token).status == "gone"
    assert store.prune_pending(redis_client, later, 100) == [request.id]
    assert store.prune_pending(redis_client, later, 100) == []


def test_unclaimed_approvals_are_claimed_once(redis_client: redis.Redis) -> None:
    request, _ = _new(redis_client, ttl=1)
    store.mark_ready(
        redis_client,
        request.id,
        ciphertext_b64="x",
        approval=_approval("t1", "u1", "b1"),
    )
    assert store.claim_unclaimed(redis_client, time.time(), 10) == []
    later = expire_now(redis_client, request.id)
    # the member is the shape earlier releases wrote, so entries made before an upgrade sweep
    member = {"id": request.id, "tenant_id": "t1", "user_id": "u1", "bundle_id": "b1"}
    assert redis_client.zrange(store.UNCLAIMED_INDEX, 0, -1) == [json.dumps(member, sort_keys=True)]
    claimed = store.claim_unclaimed(redis_client, later, 10)
    assert claimed == [store.Unclaimed(request.id, "t1", "u1", "b1")]
    assert store.claim_unclaimed(redis_client, later, 10) == []
    store.release_unclaimed(redis_client, claimed[0], time.time())
    assert store.claim_unclaimed(redis_client, time.time(), 10) == claimed


def test_no_key_grows_without_a_ttl(redis_client: redis.Redis) -> None:
    request, _ = _new(redis_client)
    store.is_polling_too_fast(redis_client, request.id, 5)
    store.mark_ready(
        redis_client,
        request.id,
        ciphertext_b64="x",
        approval=_approval("t", "u", "b"),
    )
    for key in redis_client.scan_iter("req:*"):
        assert redis_client.ttl(key) > 0, key


def test_one_ip_holds_at_most_its_cap_of_undecided_requests(redis_client: redis.Redis) -> None:
    first, token = _new(redis_client, cap=2)
    _new(redis_client, cap=2)
    pub = encode_public_key(generate_keypair())
    refused = store.create(
        redis_client,
        store.new_request(60),
        ttl=60,
        cli_pub=pub,
        tenant_id="t1",
        workspace="acme",
        mac="m",
        client_ip="198.51.100.7",
        max_per_ip=2,
    )
    assert refused is None
    _new(redis_client, cap=2, ip="198.51.100.8")  # another address is not affected
    assert store.cancel_request(redis_client, first.id, token).outcome == "cancelled"
    _new(redis_client, cap=2)  # a cancelled request frees its place at once
    assert redis_client.get(store.ip_pending_key("198.51.100.7")) == "2"


def test_an_expired_undecided_request_frees_its_place_when_swept(
    redis_client: redis.Redis,
) -> None:
    expired, _ = _new(redis_client, ttl=60, cap=1, ip="198.51.100.9")
    counter = store.ip_pending_key("198.51.100.9")
    assert redis_client.get(counter) == "1"
    # the sweep at a time past its expiry (a clock, not a sleep)
    assert store.prune_pending(redis_client, expired.expires_at + 1, 10) == [expired.id]
    assert redis_client.get(counter) is None  # counted down to zero and deleted
    assert store.prune_pending(redis_client, expired.expires_at + 1, 10) == []
    _new(redis_client, cap=1, ip="198.51.100.9")
    assert redis_client.ttl(counter) == -1  # no expiry entry of its own


def test_a_decision_counts_the_address_down_exactly_once(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client, ip="198.51.100.12")
    counter = store.ip_pending_key("198.51.100.12")
    assert store.mark_failed(redis_client, request.id, message="m")
    assert redis_client.get(counter) is None
    assert store.cancel_request(redis_client, request.id, token).outcome == "cancelled"
    assert redis_client.get(counter) is None  # not below zero, not recreated


def test_a_newer_long_poll_replaces_the_older(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client)
    first, second = store.Hold.new("first", 20), store.Hold.new("second", 20)
    assert store.take(redis_client, request.id, token, hold=first).status == "pending"
    assert redis_client.ttl(store.waiter_key(request.id)) == 25
    assert not store.take(redis_client, request.id, token, hold=first.after_wake()).replaced
    assert store.take(redis_client, request.id, token, hold=second).status == "pending"
    store.mark_denied(redis_client, request.id, denied_by="u")
    replaced = store.take(redis_client, request.id, token, hold=first.after_wake())
    assert (replaced.status, replaced.replaced) == ("pending", True)  # took nothing
    assert store.take(redis_client, request.id, token, hold=second.after_wake()).status == "denied"


def test_a_pending_take_says_how_many_votes_are_recorded(redis_client: redis.Redis) -> None:
    request, token = _new(redis_client)
    assert not store.take(redis_client, request.id, token).has_votes
    redis_client.hset(store.votes_key(request.id), "u-1", "{}")
    taken = store.take(redis_client, request.id, token)
    assert (taken.has_votes, taken.votes) == (True, 1)
    redis_client.hset(store.votes_key(request.id), "u-2", "{}")
    assert store.take(redis_client, request.id, token).votes == 2


def test_approval_json_round_trips_and_rejects_other_shapes() -> None:
    approval = _approval()
    assert store.Approval.from_json(approval.to_json()) == approval
    for text in ('{"tenant_id": "t"}', "[]"):
        try:
            store.Approval.from_json(text)
        except (ValueError, TypeError):
            continue
        raise AssertionError(f"accepted {text}")


def test_an_approval_recorded_before_the_decided_by_rename_reads_and_keeps_its_mac() -> None:
    # issue #13: one field names who decided; the stored JSON (under the approval MAC) keeps
    # its key, so a request approved by the previous release is delivered after an upgrade.
    stored = (
        '{"approved_at":"1700000000.5","bundle_id":"b1","include_keys":["A"],'
        '"tenant_id":"t1","user_id":"u1"}'
    )
    approval = store.Approval.from_json(stored)
    assert approval.decided_by == "u1"
    assert approval.to_json() == stored  # byte for byte: the MAC over it still holds


def test_who_decided_is_one_field_for_a_denial_and_an_approval(redis_client: redis.Redis) -> None:
    denied, _ = _new(redis_client)
    assert store.mark_denied(redis_client, denied.id, denied_by="u-deny")
    approved, _ = _new(redis_client)
    assert store.mark_approved(redis_client, approved.id, approval=_approval(user="u-ok"), mac="m")
    decided = [store.get(redis_client, request.id) for request in (denied, approved)]
    assert [request.decided_by if request else None for request in decided] == ["u-deny", "u-ok"]


def test_the_largest_request_stays_under_4_kb_and_a_typical_one_under_1_kb(
    redis_client: redis.Redis,
) -> None:
    """Issue #12/#14: display-only context is clipped; the key hints are bounded by validation."""

    def footprint(**hints: object) -> int:
        new = store.new_request(300)
        store.create(
            redis_client,
            new,
            ttl=300,
            cli_pub=encode_public_key(generate_keypair()),
            tenant_id="org_2abcdefghijklmnopqrstuvwx",
            workspace="acme-payments",
            mac="m" * 22,
            client_ip="203.0.113.77",
            max_per_ip=100,
            **hints,  # type: ignore[arg-type]  # the hint keywords of store.create
        )
        keys = [store.request_key(new.id), store.view_key(new.id)]
        return sum(int(redis_client.memory_usage(key) or 0) for key in keys)

    typical = footprint(
        bundle="production/api",
        template_keys=["DATABASE_URL", "REDIS_URL", "STRIPE_SECRET_KEY"],
        context={
            "hostname": "dev-laptop-042.corp.example.com",
            "cwd": "/home/ada/src/github.com/example/payments-api",
            "command": "envcat run production/api -- npm start",
            "git_remote": "git@github.com:example/payments-api.git",
            "client": "envcat/0.1.0",
        },
    )
    worst = footprint(
        bundle="b" * 200,
        bundle_id="i" * 64,
        template_keys=[f"K{i:02d}" + "X" * 26 for i in range(50)],  # 1,450 characters
        context={name: "\U0001f600" * 1024 for name in store.CONTEXT_FIELDS},
    )
    assert typical < 800  # the request's own keys; the pending index adds ~100-150 B
    assert worst < 3500


def test_the_directory_lists_only_workspaces_with_expired_requests(
    redis_client: redis.Redis,
) -> None:
    soon, _ = _new(redis_client, ttl=30, ip="198.51.100.20")
    late = store.create(
        redis_client,
        store.new_request(120),
        ttl=120,
        cli_pub=encode_public_key(generate_keypair()),
        tenant_id="t2",
        workspace="other",
        mac="m",
        client_ip="198.51.100.21",
        max_per_ip=10,
    )
    assert late is not None
    later, _ = _new(redis_client, ttl=90, ip="198.51.100.20")
    # each workspace is scored by its earliest expiry, whole seconds rounded up
    assert redis_client.zrange(store.PENDING_TENANTS, 0, -1, withscores=True) == [
        ("t1", math.ceil(soon.expires_at)),
        ("t2", math.ceil(late.expires_at)),
    ]
    between = soon.expires_at + 31  # past t1's first request, short of every other one
    assert store.prune_pending(redis_client, between, 10) == [soon.id]
    assert redis_client.get(store.ip_pending_key("198.51.100.20")) == "1"
    # t1 stays, scored by what is left
    assert redis_client.zscore(store.PENDING_TENANTS, "t1") == math.ceil(later.expires_at)
    assert set(store.pending_ids(redis_client, between, 10)) == {later.id, late.id}
    assert store.pending_count(redis_client) == 2


def test_requests_indexed_by_the_release_before_are_listed_swept_and_counted_down_once(
    redis_client: redis.Redis,
) -> None:
    ip = "198.51.100.30"
    decided, _ = _new(redis_client, ip=ip)
    expiring, _ = _new(redis_client, ip=ip)
    for request in (decided, expiring):
        as_made_before_upgrade(redis_client, request, ip)
    counter = store.ip_pending_key(ip)
    assert redis_client.get(counter) == "2"
    now = time.time()
    assert set(store.pending_of_tenant(redis_client, "t1", now, 10)) == {decided.id, expiring.id}
    assert set(store.pending_ids(redis_client, now, 10)) == {decided.id, expiring.id}
    assert store.pending_count(redis_client) == 2
    # a decision by this release takes it out of the old indexes and counts down once
    assert store.mark_failed(redis_client, decided.id, message="m")
    assert redis_client.get(counter) == "1"
    assert store.pending_of_tenant(redis_client, "t1", now, 10) == [expiring.id]
    # the sweep still empties the old global index, counting the address down
    later = expiring.expires_at + 1
    assert store.prune_pending(redis_client, later, 10) == [expiring.id]
    assert store.prune_pending(redis_client, later, 10) == []
    assert redis_client.get(counter) is None
    assert redis_client.zcard(store.PENDING_INDEX) == 0
