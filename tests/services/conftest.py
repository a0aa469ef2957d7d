"""Fixtures of the service tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from envcat.api import create_app
from envcat.models import db
from envcat.services.runtime import create_service_app
from tests.support.databases import migrated
from tests.support.rotation import NEW, OLD
from tests.support.settings import make_settings


@pytest.fixture
def chain_app(database_url: str, redis_url: str, broker_url: str) -> Iterator[Flask]:
    """The real api on both database backends, inside an app context."""
    migrated(database_url)
    app = create_app(make_settings(database_url, redis_url, broker_url))
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def apps(database_url: str, redis_url: str, broker_url: str) -> Iterator[tuple[Flask, Flask]]:
    """(app with the old keyring only, app whose primary is a new key and still reads the old)."""
    migrated(database_url)
    old = create_service_app(make_settings(database_url, redis_url, broker_url, bundle_kms_key=OLD))
    new = create_service_app(
        make_settings(database_url, redis_url, broker_url, bundle_kms_key=f"{NEW},{OLD}")
    )
    yield old, new
    for app in (old, new):
        with app.app_context():
            db.engine.dispose()
