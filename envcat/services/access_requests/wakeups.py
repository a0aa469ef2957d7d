"""One Redis subscription per process, fanning wake-ups out to its long polls (issue #14).

A long poll used to block in its own `BLPOP` on its own Redis connection: under a burst
of 2,000 waiting CLIs that was 2,000 connections opened (TCP connect, `HELLO`, `CLIENT
SETINFO`), a quarter of the api's CPU per poll. Now the scripts that end a request
(store.mark_*, cancel) and the k-of-n vote `PUBLISH` the request id on one channel;
each process keeps one subscriber (a thread, a greenlet under gevent) that wakes the
polls registered here for that id. Registering costs no Redis command.

What keeps a wake-up from being lost:
- a poll registers *before* it takes (lifecycle._long_poll), so a wake-up published
  after its take reaches it, and one published before is seen by the take;
- pub/sub keeps nothing for a subscriber that is not there: every (re)subscription
  wakes every poll of the process to take again (`RECHECK`), so nothing published
  while the subscriber was connecting or reconnecting (a killed connection, a Sentinel
  failover) is missed;
- every RECHECK_SECONDS the subscriber asks Redis which of its polls' requests are no
  longer pending (one pipelined `HGET` each) and wakes those: what a worker of the
  release before finished (it only pushes the old `req:<id>:wake` list) is answered
  within that time, and so is anything else a lost message would have delayed.

Without Sentinel a subscriber whose Redis went away (and that cannot reconnect at once)
wakes every poll with `BROKEN`: a waiting CLI hears of the outage now, as before. Under
Sentinel the polls keep waiting and take again once the subscriber is back on the new
primary, within their deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any

import redis

from envcat.services.access_requests import store

log = logging.getLogger(__name__)

RECHECK_SECONDS = 5.0  # the periodic "which are final?" sweep of the registered polls
RECONNECT_PAUSE_SECONDS = 0.25  # a subscriber whose Redis connection broke tries again
IDLE_SECONDS = 60.0  # a subscriber with no poll to serve for this long lets go of Redis
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class Wake(IntEnum):
    """Why a poll was woken, weakest first; a poll woken twice sees the strongest."""

    RECHECK = 1  # take again; keep waiting if still pending
    PROGRESS = 2  # a k-of-n vote: answer "pending" with the count now
    FINAL = 3  # the request was decided, failed, delivered or cancelled
    BROKEN = 4  # Redis went away (no Sentinel): answer 503 now


class Waiter:
    """One long poll registered in its process's hub."""

    def __init__(self, hub: WakeHub, request_id: str) -> None:
        self.request_id = request_id
        self._hub = hub
        self._event = threading.Event()
        self._news: Wake | None = None

    def notify(self, wake: Wake) -> None:
        """Record `wake` (the strongest so far counts) and wake the poll; under the hub's lock."""
        if self._news is None or wake > self._news:
            self._news = wake
        self._event.set()

    def next(self, timeout: float) -> Wake | None:
        """Block until woken (the reason) or `timeout` passes (None)."""
        if not self._event.wait(max(0.0, timeout)):
            return None
        with self._hub.lock:
            news, self._news = self._news, None
            self._event.clear()
        if news is Wake.BROKEN:
            raise redis.exceptions.ConnectionError("the wake-up subscription lost Redis")
        return news if news is not None else Wake.RECHECK


class WakeHub:
    """The process's subscriber and the polls waiting in it; started by the first poll."""

    def __init__(self, subscriber: redis.Redis, checker: redis.Redis, *, resume: bool) -> None:
        self._subscriber = subscriber  # its pool gives the subscription its one connection
        self._checker = checker  # ordinary commands (the periodic sweep)
        self._resume = resume
        self.lock = threading.Lock()
        self._generation = 0  # a subscriber thread serves while it is the current one
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._waiters: dict[str, set[Waiter]] = {}
        self._thread: threading.Thread | None = None
        self._outage = False  # the subscriber's own: Redis lost and not yet subscribed again

    @contextmanager
    def waiting(self, request_id: str) -> Iterator[Waiter]:
        """Register a poll of `request_id` for the block (take only after entering it)."""
        waiter = Waiter(self, request_id)
        with self.lock:
            if self._pid != os.getpid():  # forked after a poll ran in the parent
                self._reset()
            self._waiters.setdefault(request_id, set()).add(waiter)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._generation,), name="envcat-wakeups", daemon=True
                )
                self._thread.start()
        try:
            yield waiter
        finally:
            with self.lock:
                polls = self._waiters.get(request_id)
                if polls is not None:
                    polls.discard(waiter)
                    if not polls:
                        del self._waiters[request_id]

    def close(self, wait: float = 2.0) -> None:
        """Let the subscriber go (its app is done: a test's, or a worker shutting down).

        It stops without a word, even if Redis goes away meanwhile, and its connection is
        closed before this returns (within `wait` seconds); a later poll starts a new one.
        """
        with self.lock:
            self._generation += 1
            thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive():
            return
        with contextlib.suppress(*REDIS_DOWN):  # an empty message ends its wait at once
            self._checker.publish(store.wake_channel(self._subscriber), "")
        thread.join(wait)

    def _current(self, generation: int) -> bool:
        with self.lock:
            return generation == self._generation

    def waiting_count(self) -> int:
        """How many polls are registered in this process."""
        with self.lock:
            return sum(len(polls) for polls in self._waiters.values())

    def _wake(self, wake: Wake, request_ids: list[str] | None = None) -> None:
        with self.lock:
            if request_ids is None:
                chosen = [w for polls in self._waiters.values() for w in polls]
            else:
                chosen = [w for rid in request_ids for w in self._waiters.get(rid, ())]
            for waiter in chosen:
                waiter.notify(wake)

    def _run(self, generation: int) -> None:
        while True:
            try:
                self._listen(generation)
            except REDIS_DOWN:
                if not self._current(generation):
                    return  # closed: nobody to tell
                if not self._outage:  # one warning per outage, not one per attempt
                    log.warning("wake-up subscription lost; reconnecting")
                self._outage = True
                if not self._resume:
                    self._wake(Wake.BROKEN)
                time.sleep(RECONNECT_PAUSE_SECONDS)
            except Exception:
                # A bug must not leave the process's polls waiting for nobody: every
                # poll takes again and the next one starts a fresh subscriber.
                log.exception("wake-up subscriber failed")
                with self.lock:
                    if generation == self._generation:
                        self._thread = None
                self._wake(Wake.RECHECK)
                return
            with self.lock:
                if generation != self._generation:
                    return  # closed
                if not self._waiters:  # idle (or Redis is down and nobody waits): let go
                    self._thread = None
                    return

    def _listen(self, generation: int) -> None:
        """Subscribe and dispatch until idle for IDLE_SECONDS; raise when Redis goes away."""
        pubsub = self._subscriber.pubsub()
        try:
            pubsub.subscribe(store.wake_channel(self._subscriber))
            next_check = time.monotonic() + RECHECK_SECONDS
            idle_since = time.monotonic()
            while True:
                message = pubsub.get_message(timeout=max(0.0, next_check - time.monotonic()))
                if not self._current(generation):
                    return
                if message is not None:
                    self._dispatch(message)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + RECHECK_SECONDS
                    if self._recheck():
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since >= IDLE_SECONDS:
                        return
        finally:
            pubsub.close()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":
            # Anything published before this moment reached nobody here: take again.
            self._outage = False
            self._wake(Wake.RECHECK)
        elif message["type"] == "message":
            request_id, wake = store.parse_wake(message["data"])
            self._wake(Wake.PROGRESS if wake == store.PROGRESS_WAKE else Wake.FINAL, [request_id])

    def _recheck(self) -> bool:
        """Wake the polls whose request is no longer pending; False when there are none."""
        with self.lock:
            request_ids = list(self._waiters)
        if not request_ids:
            return False
        finished = store.not_pending(self._checker, request_ids)
        if finished:
            self._wake(Wake.FINAL, finished)
        return True
