"""Shared fixtures: real Redis, real SQLite/PostgreSQL, a real Celery worker.

Redis: a private `redis-server` on a free port for the whole session when the
binary exists (isolated from parallel runs), else the machine's 127.0.0.1:6379
with databases picked at random. App data and the Celery broker use separate
databases, and app data is flushed before each test that asks for it.
"""

from __future__ import annotations

import io
import logging
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery
from flask import Flask
from sqlalchemy.engine import make_url

import envcat.workers.tasks  # noqa: F401  # registers the shared tasks with every Celery app
from envcat.core.logging import JsonFormatter
from envcat.core.settings import Settings
from envcat.services import runtime as runtime_module
from envcat.services.access_requests.wakeups import WakeHub
from envcat.services.runtime import create_service_app
from envcat.workers.factory import QUEUES, create_celery
from tests.support import RedisServer, free_port, port_answers
from tests.support.databases import migrated
from tests.support.flask_client import ClosingClient
from tests.support.settings import POSTGRES_ADMIN_URL, make_settings, postgres_reachable

# Replies are closed like a server closes them, so work run after a reply is sent happens.
Flask.test_client_class = ClosingClient

EXTRA_ENV = (
    "ENVCAT_SERVER",
    "ENVCAT_WORKSPACE",
    # machine identities (issue #16): a CI runner's own tokens must not reach the tests
    "ENVCAT_TOKEN",
    "ENVCAT_ID_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)


COLLECTED = pytest.StashKey[list[pytest.Item]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep every collected test before -k, -m or --deselect narrow the run: the check of
    docs/security.md asks whether a named test exists, not whether this run selected it.
    (Each xdist process collects the whole suite, so that check collects nothing again.)"""
    config.stash[COLLECTED] = list(items)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell must not change results."""
    for name in list(Settings.model_fields) + list(EXTRA_ENV):
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(autouse=True)
def _wake_hubs_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every wake-up hub an app makes during a test is closed after it, the fixtures' apps
    and those a test builds by hand alike: no subscriber outlives its test (one that did
    logged into a finished test's output when a later test stopped its Redis)."""
    made: list[WakeHub] = []

    class Recorded(WakeHub):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(runtime_module, "WakeHub", Recorded)
    yield
    for hub in made:
        hub.close()


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`redis://host:port` of a Redis this test session may use."""
    if url := os.environ.get("ENVCAT_TEST_REDIS_URL"):
        yield url.rstrip("/")
        return
    try:
        server = RedisServer(port=free_port(), directory=tmp_path_factory.mktemp("redis"))
        server.start()
    except RuntimeError:
        if not port_answers(6379):
            pytest.exit("no redis-server binary and nothing on 127.0.0.1:6379", returncode=3)
        yield "redis://127.0.0.1:6379"
        return
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_dbs(redis_base_url: str) -> tuple[int, int]:
    """(app data db, broker db) for this session."""
    if redis_base_url.endswith(":6379"):
        data, broker = random.sample(range(1, 16), 2)
        return data, broker
    return 0, 1


@pytest.fixture
def redis_url(redis_base_url: str, redis_dbs: tuple[int, int]) -> str:
    """URL of the app-data database, flushed for this test."""
    url = f"{redis_base_url}/{redis_dbs[0]}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def broker_url(redis_base_url: str, redis_dbs: tuple[int, int]) -> str:
    """URL of the Celery broker's database, emptied for this test: an earlier test's
    unconsumed tasks must not reach this test's worker or fill its queue."""
    url = f"{redis_base_url}/{redis_dbs[1]}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not postgres_reachable():
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    name = f"envcat_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = make_url(POSTGRES_ADMIN_URL)
    yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both database backends; the PostgreSQL half skips when no server answers."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'envcat.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    if url := os.environ.get("ENVCAT_TEST_DATABASE_URL"):
        return url
    return f"sqlite:///{tmp_path / 'envcat.db'}"


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(sqlite_url, redis_url, broker_url)


@pytest.fixture
def service_app(settings: Settings) -> Iterator[Flask]:
    """A migrated database and the runtime, inside an app context."""
    migrated(settings.database_url)
    app = create_service_app(settings)
    with app.app_context():
        yield app


@pytest.fixture
def celery_app(settings: Settings, service_app: Flask) -> Celery:
    return create_celery(settings, service_app)


@pytest.fixture
def celery_worker_parameters() -> dict[str, Any]:
    """How Celery's pytest plugin's `celery_worker` fixture starts its worker thread on
    `celery_app` (the real app on the real broker): solo pool, every queue, no ping task."""
    return {
        "concurrency": 1,
        "queues": list(QUEUES),
        "perform_ping_check": False,
        "shutdown_timeout": 30,
    }


@pytest.fixture
def api_app(settings: Settings) -> Iterator[Flask]:
    """The real api app on a migrated database, inside an app context."""
    from envcat.api import create_app

    migrated(settings.database_url)
    app = create_app(settings)
    with app.app_context():
        yield app


@pytest.fixture
def api_client(api_app: Flask):
    return api_app.test_client()


@pytest.fixture
def signed_as(api_app: Flask, settings: Settings):
    """`signed_as(user, tenant, role="owner")` → a SignedClient for a member of the tenant."""
    from tests.support.signed import SignedClient, member_client

    def make(user_id: str, tenant_id: str, role: str = "owner") -> SignedClient:
        return member_client(api_app, user_id, tenant_id, role)

    return make


@pytest.fixture
def live_stack(sqlite_url: str, redis_url: str, broker_url: str):
    """The real api, a real Celery worker and the real bff on loopback (tests/support/stack.py)."""
    from tests.support.stack import live_stack as run_live_stack

    with run_live_stack(sqlite_url, redis_url, broker_url) as stack:
        yield stack


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, formatted exactly as production does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)
