"""Migrated test databases, copied from one migration per test process.

Running every Alembic revision costs 0.2 s on a quiet machine and about 1 s while
the suite keeps both cores busy, and over a thousand tests need a migrated
database. `migrated(url)` runs the migrations once per process and backend into a
template, then gives each new database a copy: SQLite through its backup API (a
consistent copy even of a WAL database), PostgreSQL with `CREATE DATABASE …
TEMPLATE`. A database that already holds tables is brought up to date by Alembic
itself, as `envcat server init-db` would. The migrations are still tested as
migrations, from empty and step by step, in `tests/models/test_migrations.py`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import tempfile
import threading
import uuid
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from envcat.models import migrate
from tests.support.settings import POSTGRES_ADMIN_URL

_lock = threading.Lock()
_sqlite_template: Path | None = None
_postgres_template: str | None = None


def migrated(database_url: str) -> None:
    """Bring `database_url` to the head revision, by copy when it is new."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite" and url.database and url.database != ":memory:":
        target = Path(url.database)
        if not target.exists() or target.stat().st_size == 0:
            _copy_sqlite(target)
            return
    elif backend == "postgresql" and url.database and _postgres_is_empty(database_url):
        _copy_postgres(url.database)
        return
    migrate.upgrade(database_url)


def _copy_sqlite(target: Path) -> None:
    global _sqlite_template
    with _lock:
        if _sqlite_template is None:
            directory = Path(tempfile.mkdtemp(prefix="envcat-template-"))
            atexit.register(_remove_tree, directory)
            template = directory / "template.db"
            migrate.upgrade(f"sqlite:///{template}")
            _sqlite_template = template
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.closing(sqlite3.connect(_sqlite_template)) as source,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)


def _postgres_is_empty(database_url: str) -> bool:
    plain = (
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    with psycopg.connect(plain, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    return row is not None and row[0] == 0


def _copy_postgres(name: str) -> None:
    """Replace the empty database `name` with a copy of the migrated template."""
    global _postgres_template
    with _lock, psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        if _postgres_template is None:
            template = f"envcat_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            admin.execute(f'CREATE DATABASE "{template}"')
            atexit.register(_drop_postgres, template)
            template_url = make_url(POSTGRES_ADMIN_URL).set(
                drivername="postgresql+psycopg", database=template
            )
            migrate.upgrade(template_url.render_as_string(hide_password=False))
            _postgres_template = template
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template}"')


def _drop_postgres(name: str) -> None:
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin,
    ):
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _remove_tree(directory: Path) -> None:
    for entry in directory.iterdir():
        entry.unlink(missing_ok=True)
    directory.rmdir()
