"""Redis down → 503 with nothing half-written; Redis back → the same app works again.

The test runs its own private redis-server (app data and broker), stops it and
starts it again on the same port; the machine's shared services are untouched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from envcat.core.settings import Settings
from envcat.models import AuditEvent, db
from tests.support import RedisServer, free_port
from tests.support.api import REQUESTS, Cli, SeedKey, seed_bundle
from tests.support.databases import migrated
from tests.support.settings import make_settings
from tests.support.signed import SignedClient, add_member

TENANT = "t-acme"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), directory=tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outage_app(sqlite_url: str, redis_server: RedisServer) -> Iterator[tuple[Flask, Settings]]:
    from envcat.api import create_app

    settings = make_settings(sqlite_url, f"{redis_server.url}/0", f"{redis_server.url}/1")
    migrated(settings.database_url)
    app = create_app(settings)
    with app.app_context():
        yield app, settings


def _audit_count() -> int:
    db.session.rollback()
    return int(db.session.execute(select(func.count()).select_from(AuditEvent)).scalar_one())


def _calls(app: Flask, settings: Settings, cli: Cli, bundle_id: str) -> dict[str, Any]:
    owner = SignedClient(
        app.test_client(), settings.bff_shared_secret.get_secret_value(), "u-owner", TENANT
    )
    client = app.test_client()
    approve = {"bundle_id": bundle_id, "include_keys": ["A"]}
    return {
        "create": lambda: client.post(REQUESTS, json={"client_pubkey": cli.public_key}),
        "context": lambda: client.get(f"{REQUESTS}/{cli.id}/context"),
        "wait": lambda: cli.wait(),
        "cancel": lambda: client.delete(
            f"{REQUESTS}/{cli.id}", headers={"X-Poll-Token": cli.poll_token}
        ),
        "approve": lambda: owner.post(f"{REQUESTS}/{cli.id}/encrypt-from-bundle", json=approve),
        "deny": lambda: owner.post(f"{REQUESTS}/{cli.id}/deny"),
    }


def test_redis_down_gives_503_and_recovery_needs_no_restart(
    outage_app: tuple[Flask, Settings], redis_server: RedisServer
) -> None:
    app, settings = outage_app
    add_member("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", [SeedKey("A", "a")])
    cli = Cli.start(app.test_client())
    long_poll: list[Any] = []
    poller = threading.Thread(target=lambda: long_poll.append(cli.wait(timeout=20)))
    poller.start()
    time.sleep(0.3)

    redis_server.stop()
    poller.join(timeout=30)
    assert long_poll[0].status_code == 503  # a waiting CLI learns at once, not after 20 s
    for name, call in _calls(app, settings, cli, bundle_id).items():
        response = call()
        assert response.status_code == 503, name
        assert response.get_json()["error"] == "unavailable", name
    assert _audit_count() == 0  # nothing written half-way

    redis_server.start()  # same port, empty: the app reconnects by itself
    assert app.test_client().get("/readyz").status_code == 200
    fresh = Cli.start(app.test_client())
    calls = _calls(app, settings, fresh, bundle_id)
    assert calls["context"]().status_code == 200
    assert calls["wait"]().get_json() == {"status": "pending"}
    assert calls["approve"]().status_code == 202
    assert _audit_count() == 1
