"""Settings and database addresses the tests build their apps from."""

from __future__ import annotations

import os
from typing import Any

import psycopg

from envcat.core.keys import new_kms_key, new_shared_secret
from envcat.core.settings import Settings
from tests.support.envelopes import TEST_SIGNING_SEED

POSTGRES_ADMIN_URL = os.environ.get(
    "ENVCAT_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def postgres_reachable() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def make_settings(
    database_url: str, redis_url: str, broker_url: str | None, **overrides: Any
) -> Settings:
    """Explicit test settings, never read from the environment."""
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "celery_broker_url": broker_url,
        "bundle_kms_key": new_kms_key(),
        "delivery_signing_key": TEST_SIGNING_SEED,
        "bff_shared_secret": new_shared_secret(),
        "public_url": "http://envcat.test",
        "request_rate_limit": "1000/minute",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]  # test overrides of any field
