"""rotate-kms moves connector credentials to the new primary key too (on SQLite and
PostgreSQL), so the old key can leave BUNDLE_KMS_KEY without breaking a connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from envcat.core.keys import new_kms_key
from envcat.models import Connection, db
from envcat.services import rotation
from envcat.services.connectors import connections
from tests.connectors.support import aws_connection, owner
from tests.support.databases import migrated
from tests.support.settings import make_settings

OLD, NEW = new_kms_key(), new_kms_key()


@pytest.fixture
def apps(
    database_url: str, redis_url: str, broker_url: str
) -> Iterator[tuple[Flask, Flask, Flask]]:
    """(old keyring, new primary + old, new key alone)."""
    from envcat.services.runtime import create_service_app

    migrated(database_url)
    built = tuple(
        create_service_app(make_settings(database_url, redis_url, broker_url, bundle_kms_key=key))
        for key in (OLD, f"{NEW},{OLD}", NEW)
    )
    yield built  # type: ignore[misc]  # a tuple of three apps
    for app in built:
        with app.app_context():
            db.engine.dispose()


def test_credentials_are_rotated_and_still_decrypt(apps: tuple[Flask, Flask, Flask]) -> None:
    old, both, new_only = apps
    with old.app_context():
        connection_id = aws_connection(owner(), "http://127.0.0.1:1")
    with both.app_context():
        assert rotation.count_outdated() == 1
        assert rotation.rotate_batch(10) == 1
        assert rotation.count_outdated() == 0
    with new_only.app_context():
        row = db.session.get(Connection, connection_id)
        assert row is not None
        assert connections.credentials(row)["access_key_id"] == "AKIAENVCATTEST000001"
