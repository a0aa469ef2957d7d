"""Long polls wake through one subscription per process (issue #14), against a real Redis.

The races a per-process subscription adds are replayed here: a wake-up published while
the subscriber is not (yet, or no longer) subscribed, a subscriber connection killed
under a waiting poll, two polls of one request; and the point of it: many polls in one
process hold one Redis connection, not one each.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial

import pytest
import redis
from flask import Flask

from envcat.core.settings import Settings
from envcat.services.access_requests import store
from envcat.services.access_requests.wakeups import (
    RECHECK_SECONDS,
    RECONNECT_PAUSE_SECONDS,
    Wake,
    WakeHub,
)
from envcat.services.runtime import EXTENSION_KEY, current, make_redis
from tests.support.requests import stored_request
from tests.support.settings import make_settings
from tests.support.wakeups import (
    Poll,
    pubsub_clients,
    refusing_new_connections,
    start_poll,
    wait_until,
)

PROMPT = 1.0  # seconds: a wake-up reaches its poll well within this (the sweep is 5 s)


_HUBS: list[WakeHub] = []  # closed after each test: no subscriber outlives its test


@pytest.fixture(autouse=True)
def _close_hubs() -> Iterator[None]:
    yield
    while _HUBS:
        _HUBS.pop().close()


def _hub(settings: Settings, *, resume: bool, subscribed: bool = True) -> WakeHub:
    """A hub of its own; `subscribed`: its subscription is confirmed before it returns."""
    hub = WakeHub(make_redis(settings, blocking=True), make_redis(settings), resume=resume)
    _HUBS.append(hub)
    if subscribed:
        with hub.waiting("warm-up") as waiter:
            # The confirmation wakes every poll registered before it to take again.
            assert waiter.next(5.0) is Wake.RECHECK
    return hub


def _holds(r: redis.Redis, waiter_key: str) -> bool:
    return r.exists(waiter_key) == 1


def _waiting_poll(app: Flask, r: redis.Redis) -> tuple[store.AccessRequest, Poll]:
    """A new request and a long poll of it (10 s) that took and now waits."""
    request, token = stored_request(r)
    poll = start_poll(app, request.id, token, timeout=10)
    wait_until(partial(_holds, r, store.waiter_key(request.id)))
    return request, poll


def test_a_poll_answers_within_milliseconds_of_a_decision(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    request, poll = _waiting_poll(service_app, redis_client)
    decided = time.monotonic()
    assert store.mark_denied(redis_client, request.id, denied_by="u-1")
    assert poll.answer().status == "denied"
    assert poll.answered_at - decided < PROMPT


def test_a_vote_wakes_the_poll_with_pending_news(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    request, poll = _waiting_poll(service_app, redis_client)
    voted = time.monotonic()
    # What the vote script does: record the vote, then publish the news. (Published
    # without a vote, news sent before this process's subscription is confirmed would
    # be lost by design: the confirmation's recheck finds nothing new.)
    redis_client.hset(store.votes_key(request.id), "u-1", "a vote")
    store.wake_with_progress(redis_client, request.id)
    assert poll.answer().status == "pending"
    assert poll.answered_at - voted < PROMPT
    assert store.get(redis_client, request.id) is not None  # a vote takes nothing


@pytest.mark.parametrize("votes_before", [0, 1], ids=["first-vote", "second-vote"])
def test_a_vote_published_before_the_subscription_starts_still_answers(
    settings: Settings, service_app: Flask, redis_client: redis.Redis, votes_before: int
) -> None:
    """The vote's news reached nobody (this process had no subscription yet): the
    recheck that the subscription's start brings must answer the poll, not its timeout,
    whether the poll began before any vote or after one (2 of 3)."""
    hub = _hub(settings, resume=True, subscribed=False)  # subscribes when a poll registers
    runtime = service_app.extensions[EXTENSION_KEY]
    service_app.extensions[EXTENSION_KEY] = dataclasses.replace(runtime, wakeups=hub)
    request, token = stored_request(redis_client)
    if votes_before:
        redis_client.hset(store.votes_key(request.id), "u-0", "an earlier vote")
    runtime.redis.ping()  # the poll's take reuses this pooled connection in the block below
    subscribed_before = pubsub_clients(redis_client)
    with refusing_new_connections(redis_client):  # the subscriber cannot connect yet
        poll = start_poll(service_app, request.id, token, timeout=10)
        wait_until(partial(_holds, redis_client, store.waiter_key(request.id)))
        redis_client.hset(store.votes_key(request.id), "u-1", "a vote")  # as the vote script
        store.wake_with_progress(redis_client, request.id)
        assert pubsub_clients(redis_client) - subscribed_before == set()  # reached nobody
    allowed = time.monotonic()
    assert poll.answer().status == "pending"
    assert poll.answered_at - allowed < PROMPT + RECONNECT_PAUSE_SECONDS  # not the 10 s


def test_two_polls_of_one_request_the_newer_takes(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    request, token = stored_request(redis_client)
    older = start_poll(service_app, request.id, token, timeout=10)
    wait_until(lambda: redis_client.exists(store.waiter_key(request.id)) == 1)
    first_holder = redis_client.get(store.waiter_key(request.id))
    newer = start_poll(service_app, request.id, token, timeout=10)
    wait_until(lambda: redis_client.get(store.waiter_key(request.id)) != first_holder)
    # The older poll may already have left: any wake-up (its subscription starting,
    # the sweep) makes it take again, find itself replaced and answer pending.
    decided = time.monotonic()
    assert store.mark_denied(redis_client, request.id, denied_by="u-1")
    assert newer.answer().status == "denied"
    assert older.answer().status == "pending"  # replaced: it took nothing
    assert max(newer.answered_at, older.answered_at) - decided < PROMPT


def test_every_poll_of_a_request_in_the_process_wakes(
    settings: Settings, service_app: Flask, redis_client: redis.Redis
) -> None:
    hub = _hub(settings, resume=False)
    request, _ = stored_request(redis_client)
    with ExitStack() as polling:
        waiters = [polling.enter_context(hub.waiting(request.id)) for _ in range(5)]
        other = polling.enter_context(hub.waiting("req-other"))
        assert store.mark_denied(redis_client, request.id, denied_by="u-1")
        assert {waiter.next(PROMPT) for waiter in waiters} == {Wake.FINAL}
        assert other.next(0.2) is None  # only the polls of that request


def test_many_polls_in_one_process_share_one_redis_connection(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    requests = [stored_request(redis_client) for _ in range(50)]
    subscribed_before = pubsub_clients(redis_client)
    connected_before = int(redis_client.info("clients")["connected_clients"])
    polls = []
    for request, token in requests:  # one after another, as a trickle of CLIs arrives
        polls.append(start_poll(service_app, request.id, token, timeout=15))
        wait_until(partial(_holds, redis_client, store.waiter_key(request.id)))
    assert current().wakeups.waiting_count() == 50
    clients = redis_client.client_list()
    # One subscription for the process; nobody blocked in a BLPOP of their own.
    assert len(pubsub_clients(redis_client) - subscribed_before) == 1
    assert not [c for c in clients if "b" in c["flags"]]
    # The subscription and the pool's connections for short commands (a take may still be
    # returning its connection when the next one starts): a few, not one per poll.
    assert len(clients) - connected_before <= 10
    for request, _ in requests:
        store.mark_denied(redis_client, request.id, denied_by="u-1")
    assert {poll.answer().status for poll in polls} == {"denied"}


def test_a_killed_subscriber_connection_still_delivers(
    service_app: Flask, redis_client: redis.Redis
) -> None:
    subscribed_before = pubsub_clients(redis_client)
    request, poll = _waiting_poll(service_app, redis_client)
    wait_until(lambda: len(pubsub_clients(redis_client) - subscribed_before) == 1)
    (ours,) = pubsub_clients(redis_client) - subscribed_before
    assert redis_client.client_kill_filter(_id=ours) == 1
    decided = time.monotonic()
    assert store.mark_denied(redis_client, request.id, denied_by="u-1")
    assert poll.answer().status == "denied"
    assert poll.answered_at - decided < PROMPT


@pytest.mark.parametrize("starting", [True, False], ids=["first-subscription", "resubscribing"])
def test_a_wake_up_published_while_nobody_is_subscribed_is_not_lost(
    settings: Settings, service_app: Flask, redis_client: redis.Redis, starting: bool
) -> None:
    """The waiter took (pending), then the request ended while the subscriber could not
    reach Redis: the wake-up reached nobody, yet the (re)subscription wakes the poll."""
    subscribed_before = pubsub_clients(redis_client)
    # A Sentinel deployment's hub: it waits for Redis to come back.
    hub = _hub(settings, resume=True, subscribed=not starting)
    request, token = stored_request(redis_client)
    with ExitStack() as polling:
        ours = pubsub_clients(redis_client) - subscribed_before  # none before it subscribed
        with refusing_new_connections(redis_client, killing=ours):
            waiter = polling.enter_context(hub.waiting(request.id))  # what _long_poll does
            assert store.take(redis_client, request.id, token).status == "pending"
            assert store.mark_denied(redis_client, request.id, denied_by="u-1")
            assert pubsub_clients(redis_client) - subscribed_before == set()  # reached nobody
            assert waiter.next(0.5) is None  # nothing can reach the poll now
        allowed = time.monotonic()
        assert waiter.next(RECHECK_SECONDS) is Wake.RECHECK
        assert time.monotonic() - allowed < PROMPT  # the subscription, not the 5 s sweep
        assert store.take(redis_client, request.id, token).status == "denied"


def test_a_request_ended_by_the_release_before_is_answered_by_the_sweep(
    settings: Settings, service_app: Flask, redis_client: redis.Redis
) -> None:
    """A worker of the release before only pushes the old wake-up list (rolling upgrade)."""
    hub = _hub(settings, resume=False)
    request, _ = stored_request(redis_client)
    with hub.waiting(request.id) as waiter:
        redis_client.hset(store.request_key(request.id), "s", "denied")  # as its script did
        redis_client.lpush(store.wake_key(request.id), "1")
        ended = time.monotonic()
        assert waiter.next(RECHECK_SECONDS + 2) is Wake.FINAL
        assert time.monotonic() - ended <= RECHECK_SECONDS + 1


def test_a_poll_without_news_ends_at_its_deadline(
    settings: Settings, service_app: Flask, redis_client: redis.Redis
) -> None:
    hub = _hub(settings, resume=False)
    request, _ = stored_request(redis_client)
    with hub.waiting(request.id) as waiter:
        started = time.monotonic()
        assert waiter.next(0.3) is None
        assert time.monotonic() - started >= 0.25


def test_without_sentinel_a_lost_redis_fails_the_poll_at_once(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    hub = _hub(unreachable, resume=False, subscribed=False)
    started = time.monotonic()
    with hub.waiting("req-gone") as waiter, pytest.raises(redis.exceptions.ConnectionError):
        waiter.next(5.0)
    assert time.monotonic() - started < 1.0


def test_under_sentinel_a_poll_that_cannot_reach_redis_ends_at_its_deadline(
    settings: Settings,
) -> None:
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    hub = _hub(unreachable, resume=True, subscribed=False)
    started = time.monotonic()
    with hub.waiting("req-gone") as waiter:
        assert waiter.next(1.0) is None  # "still pending": the CLI polls again
    assert time.monotonic() - started < 1.5


def test_a_deployment_on_another_database_of_the_server_is_not_woken(
    settings: Settings,
    service_app: Flask,
    redis_client: redis.Redis,
    redis_base_url: str,
    redis_dbs: tuple[int, int],
    sqlite_url: str,
    broker_url: str,
) -> None:
    """Pub/Sub spans a server's databases: each database has its own wake channel."""
    other_db = next(db for db in range(16) if db not in redis_dbs)
    neighbour = make_settings(sqlite_url, f"{redis_base_url}/{other_db}", broker_url)
    ours, theirs = _hub(settings, resume=False), _hub(neighbour, resume=False)
    request, _ = stored_request(redis_client)
    with ours.waiting(request.id) as mine, theirs.waiting(request.id) as neighbours:
        assert store.mark_denied(redis_client, request.id, denied_by="u-1")
        assert mine.next(PROMPT) is Wake.FINAL
        assert neighbours.next(PROMPT) is None  # the same id, another deployment: no news


def test_a_closed_hub_lets_go_of_its_subscription_and_a_later_poll_starts_another(
    settings: Settings, service_app: Flask, redis_client: redis.Redis
) -> None:
    """A test's app (or a worker shutting down) closes its hub: the subscriber thread and
    its connection are gone when close() returns, not up to IDLE_SECONDS later."""
    subscribed_before = pubsub_clients(redis_client)
    hub = _hub(settings, resume=True)  # subscribed, then idle: it would linger a minute
    assert len(pubsub_clients(redis_client) - subscribed_before) == 1
    started = time.monotonic()
    hub.close()
    assert time.monotonic() - started < PROMPT
    wait_until(lambda: pubsub_clients(redis_client) - subscribed_before == set(), timeout=2.0)
    with hub.waiting("req-later") as waiter:
        assert waiter.next(5.0) is Wake.RECHECK  # a new subscription, confirmed
    assert len(pubsub_clients(redis_client) - subscribed_before) == 1
