"""Real database failures around the audit log (issue #13), and concurrent chain writers.

`refused_audit()` makes the database itself refuse audit events with a trigger (SQLite
`RAISE(ABORT)`, a PostgreSQL plpgsql function): no mock, the append fails as a full disk
or a broken constraint would. `write_chain()` runs in its own process with its own
connection and appends to one tenant's chain while writing changes.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Barrier

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from envcat.core.schemas.bundles import BundleCreate, BundleUpdate
from envcat.models import db
from envcat.services import audit, bundles
from envcat.services.runtime import create_service_app
from envcat.services.tenancy import Actor
from tests.support.settings import make_settings

REFUSED = "audit store refused"
SQLITE_BUSY_TIMEOUT = 0  # the probe asks once: "locked" means another writer holds it now
_ACTION = re.compile(r"[a-z_.]+")


def _create_trigger(dialect: str, action: str | None) -> None:
    if action is not None and not _ACTION.fullmatch(action):
        raise ValueError(action)  # spliced into DDL: actions only
    if dialect == "postgresql":
        when = f"WHEN (NEW.action = '{action}')" if action else ""
        db.session.execute(
            text(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN RAISE EXCEPTION '{REFUSED}'; END $$"
            )
        )
        db.session.execute(
            text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW "
                f"{when} EXECUTE FUNCTION refuse_audit()"
            )
        )
    else:
        when = f"WHEN NEW.action = '{action}'" if action else ""
        db.session.execute(
            text(
                f"CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events {when} "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
            )
        )


def _drop_trigger(dialect: str) -> None:
    if dialect == "postgresql":
        db.session.execute(text("DROP TRIGGER refuse_audit ON audit_events"))
        db.session.execute(text("DROP FUNCTION refuse_audit()"))
    else:
        db.session.execute(text("DROP TRIGGER refuse_audit"))


@contextmanager
def refused_audit(action: str | None = None) -> Iterator[None]:
    """Inside the block the database refuses every audit event (or those of `action`)."""
    dialect = db.session.get_bind().dialect.name
    _create_trigger(dialect, action)
    db.session.commit()
    try:
        yield
    finally:
        db.session.rollback()
        _drop_trigger(dialect)
        db.session.commit()


def chain_is_free(database_url: str, tenant_id: str) -> bool:
    """Whether another connection could take the tenant's chain-head lock right now: SQLite's
    write lock (`BEGIN IMMEDIATE`), or PostgreSQL's advisory lock of the chain."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        probe = sqlite3.connect(
            str(url.database), timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None
        )
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:  # "database is locked"
            return False
        finally:
            probe.close()
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as conn:
        row = conn.execute(
            "SELECT pg_try_advisory_xact_lock(hashtext(%s))", (f"audit:{tenant_id}",)
        ).fetchone()
        return bool(row and row[0])


def write_chain(
    database_url: str,
    redis_url: str,
    tenant_id: str,
    worker: int,
    rounds: int,
    barrier: Barrier,
) -> None:
    """One writer process: each round creates a bundle, renames it (each a change and its
    event in one transaction) and appends an event with no change of its own."""
    app = create_service_app(make_settings(database_url, redis_url, None))
    with app.app_context():
        actor = Actor(tenant_id, f"u-{worker}")
        barrier.wait()
        for n in range(rounds):
            made = bundles.create_bundle(actor, BundleCreate(name=f"w{worker}/b{n}"))
            bundles.update_bundle(actor, made.id, BundleUpdate(name=f"w{worker}/b{n}-renamed"))
            audit.record(tenant_id, actor.user_id, "test.read", f"bundle:{made.id}")
        db.session.remove()
        db.engine.dispose()
