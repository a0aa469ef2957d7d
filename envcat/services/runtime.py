"""Per-process resources (database, Redis, keyring) bound to a Flask app.

The api and the worker both call `init_app`; services reach the resources
through `current()`, so they need an app context but never `flask.request`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from envcat.core import redisconn
from envcat.core.kms import Keyring
from envcat.core.settings import Settings
from envcat.core.wire import MAX_WAIT_SECONDS
from envcat.models import db
from envcat.services.access_requests.wakeups import WakeHub
from envcat.services.audit import Ledger
from envcat.services.slug_cache import SlugCache

EXTENSION_KEY = "envcat"
# Ordinary commands fail fast; the wake-up subscription's connection waits longer.
REDIS_SOCKET_TIMEOUT = 5.0
# redis-py >= 6 caps a pool at 100 connections, then raises MaxConnectionsError (a 503).
# Under gevent one process serves thousands of greenlets, each of which may hold a
# connection for a short command at once; gunicorn's worker_connections bounds them.
MAX_REDIS_CONNECTIONS = 10_000


@dataclass(frozen=True)
class Runtime:
    """What a service function needs besides the database session."""

    settings: Settings
    redis: Redis
    redis_blocking: Redis
    keyring: Keyring
    wakeups: WakeHub  # the process's one wake-up subscription for its long polls
    slugs: SlugCache = field(default_factory=SlugCache)  # workspace slugs, a few seconds
    # deliveries' `request.delivered`, after the reply: a burst shares units (issue #22)
    deliveries: Ledger = field(default_factory=lambda: Ledger("a delivery"))


def make_redis(settings: Settings, *, blocking: bool = False) -> Redis:
    """Return a pooled client (TLS or Sentinel as configured); `blocking` ones wait longer
    than any long poll."""
    timeout = MAX_WAIT_SECONDS + 10 if blocking else REDIS_SOCKET_TIMEOUT
    # redis-py retries a failed command 10 times with backoff (about 4.5 s against a
    # refused port); the wake-up subscriber reconnects on its own instead
    # (access_requests.wakeups), so its client only retries a stale connection once.
    extra: dict[str, Any] = {"retry": Retry(NoBackoff(), 1)} if blocking else {}
    return redisconn.connect(
        settings,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
        max_connections=MAX_REDIS_CONNECTIONS,
        **extra,
    )


def _engine_options(database_url: str) -> dict[str, Any]:
    # Error messages must not quote bound parameters: they reach logs and retries.
    common: dict[str, Any] = {"hide_parameters": True}
    if database_url.startswith("sqlite"):
        return {**common, "connect_args": {"timeout": 10, "check_same_thread": False}}
    return {**common, "pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}


def init_app(app: Flask, settings: Settings) -> Runtime:
    """Bind the database and Redis to `app` and return the runtime."""
    app.config["SQLALCHEMY_DATABASE_URI"] = settings.database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = _engine_options(settings.database_url)
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
    db.init_app(app)
    r = make_redis(settings)
    r_blocking = make_redis(settings, blocking=True)
    runtime = Runtime(
        settings=settings,
        redis=r,
        redis_blocking=r_blocking,
        keyring=Keyring.from_setting(settings.kms_key_value()),
        # Under Sentinel a long poll outlives a failover: it resumes on the new primary.
        wakeups=WakeHub(r_blocking, r, resume=bool(settings.redis_sentinels)),
    )
    app.extensions[EXTENSION_KEY] = runtime
    return runtime


def create_service_app(settings: Settings, name: str = "envcat") -> Flask:
    """A bare Flask app holding the runtime, for workers and command-line tools."""
    app = Flask(name)
    init_app(app, settings)
    return app


def current() -> Runtime:
    """The runtime of the app in the current context."""
    runtime: Runtime = current_app.extensions[EXTENSION_KEY]
    return runtime
