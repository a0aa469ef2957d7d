"""A throw-away PostgreSQL database for benchmarks (tests use the `postgres_url` fixture)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
from sqlalchemy.engine import make_url

from tests.support.settings import POSTGRES_ADMIN_URL


@contextlib.contextmanager
def temporary_postgres(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, drop it (FORCE) at the end."""
    name = f"envcat_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
