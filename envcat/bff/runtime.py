"""Per-process resources of the bff: the api client, Redis (sessions, throttling), Clerk's verifier.

The bff holds no database connection; Redis holds only its `bff:*` keys: local
sessions (`bff:sess:*`) and sign-in/sign-up throttling.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app

from envcat.bff.apiclient import ApiClient
from envcat.bff.clerk import ClerkVerifier
from envcat.bff.throttle import Throttle
from envcat.core import redisconn
from envcat.core.settings import Settings

EXTENSION_KEY = "envcat_bff"
REDIS_TIMEOUT_SECONDS = 2.0
# redis-py caps a pool at 100 connections by default; under gevent one process may
# check many sign-ins at once.
REDIS_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class BffRuntime:
    """What the bff's views need besides the request."""

    settings: Settings
    api: ApiClient
    redis: redis.Redis
    throttle: Throttle
    clerk: ClerkVerifier | None

    def close(self) -> None:
        """Release pooled connections (tests and tools that build many apps)."""
        self.api.close()
        self.redis.close()


def build_runtime(settings: Settings) -> BffRuntime:
    """Create the pooled clients for one process."""
    client = redisconn.connect(
        settings,
        decode_responses=True,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        health_check_interval=30,
        max_connections=REDIS_MAX_CONNECTIONS,
    )
    return BffRuntime(
        settings=settings,
        api=ApiClient(settings.api_base_url, settings.bff_shared_secret.get_secret_value()),
        redis=client,
        throttle=Throttle(client),
        clerk=ClerkVerifier(settings) if settings.auth_provider == "clerk" else None,
    )


def runtime() -> BffRuntime:
    """The runtime of the app in the current context."""
    value: BffRuntime = current_app.extensions[EXTENSION_KEY]
    return value
