"""What the administrative server commands do: migrate, rotate, verify, create accounts.

Imported only when such a command runs (it loads Flask, SQLAlchemy and Celery).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from celery import Celery
from flask import Flask
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import SQLAlchemyError

from envcat.core.settings import Settings
from envcat.models import db, migrate
from envcat.ops.config import OpsError
from envcat.services import accounts, audit, fingerprints, rotation
from envcat.services.errors import EnvCatError
from envcat.services.runtime import create_service_app
from envcat.workers.factory import create_celery

ROTATE_TASK = "envcat.rotate_kms"
POLL_SECONDS = 0.5
STALL_WARNING_SECONDS = 30.0
STALL_GIVE_UP_SECONDS = 300.0

Echo = Callable[[str], None]


@contextlib.contextmanager
def service_context(settings: Settings) -> Iterator[Flask]:
    """A service app (database, Redis, keyring) in its app context; database errors → one line."""
    app = create_service_app(settings, "envcat.ops")
    try:
        with app.app_context():
            yield app
    except SQLAlchemyError as exc:
        # The type only: the text may quote SQL parameters.
        raise OpsError(
            f"envcat: database error ({type(exc).__name__}); is DATABASE_URL right "
            "and the schema migrated (envcat server init-db)?"
        ) from None


def init_database(settings: Settings) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    try:
        migrate.upgrade(settings.database_url)
    except SQLAlchemyError as exc:
        raise OpsError(f"envcat: cannot migrate the database ({type(exc).__name__})") from None


@dataclass(frozen=True)
class CreatedAccount:
    """The new account's identifiers (plain values: the session closes with the command)."""

    email: str
    user_id: str
    tenant_id: str


def create_user(settings: Settings, email: str, password: str) -> CreatedAccount:
    """Create a local account and its personal tenant; domain errors → one line."""
    with service_context(settings):
        try:
            user, tenant = accounts.create_local_user(email, password)
        except EnvCatError as exc:
            raise OpsError(f"envcat: {exc.message}") from None
        return CreatedAccount(user.email, user.id, tenant.id)


@dataclass(frozen=True)
class AuditSummary:
    """The result of walking every tenant's audit chain."""

    reports: list[audit.ChainReport]

    @property
    def broken(self) -> list[audit.ChainReport]:
        return [report for report in self.reports if not report.is_intact]

    @property
    def events(self) -> int:
        return sum(report.events for report in self.reports)


def verify_audit(settings: Settings) -> AuditSummary:
    """Recompute every tenant's audit hash chain."""
    with service_context(settings):
        tenants = audit.tenants_with_events()
        return AuditSummary([audit.verify_chain(tenant) for tenant in tenants])


def refresh_fingerprints(settings: Settings, batch_size: int) -> fingerprints.Refreshed:
    """Fingerprint every stored value not yet under the first scan key (issue #19)."""
    with service_context(settings):
        return fingerprints.refresh(batch_size)


def _count_outdated() -> int:
    try:
        return rotation.count_outdated()
    finally:
        # End the read transaction: on SQLite it would hold off the workers' writes.
        db.session.rollback()


def _enqueue_rotation(celery: Celery, batch_size: int) -> tuple[int, int]:
    outdated = _count_outdated()
    batches = math.ceil(outdated / batch_size)
    try:
        for _ in range(batches):
            celery.send_task(ROTATE_TASK, args=(batch_size,))
    except BrokerError:
        raise OpsError("envcat: the Celery broker is unreachable (CELERY_BROKER_URL)") from None
    return outdated, batches


def rotate_keys(settings: Settings, batch_size: int, *, wait: bool, echo: Echo) -> None:
    """Enqueue `envcat.rotate_kms` batches for every outdated value; optionally watch them."""
    with service_context(settings) as app:
        total, batches = _enqueue_rotation(create_celery(settings, app), batch_size)
        if total == 0:
            echo("every value is already under the primary key")
            return
        echo(f"enqueued {batches} batch(es) for {total} values under an old key")
        if not wait:
            return
        try:
            left = watch_rotation(total, echo)
        except KeyboardInterrupt:
            raise OpsError("rotate-kms: stopped watching; the queued batches still run") from None
    if left:
        raise OpsError(f"rotate-kms: gave up waiting with {left} values under an old key")
    echo("done: every value is under the primary key")


def watch_rotation(
    total: int,
    echo: Echo,
    *,
    warn_after: float = STALL_WARNING_SECONDS,
    give_up_after: float = STALL_GIVE_UP_SECONDS,
) -> int:
    """Report progress until no value is left under an old key, or progress stalls.

    Returns how many values are left (0 when the rotation is complete).
    """
    remaining = total
    last_change = time.monotonic()
    warned = False
    while remaining:
        time.sleep(POLL_SECONDS)
        now_remaining = _count_outdated()
        stalled = time.monotonic() - last_change
        if now_remaining != remaining:
            remaining, last_change, warned = now_remaining, time.monotonic(), False
            echo(f"re-encrypted {total - remaining} of {total} values ({remaining} left)")
        elif stalled > give_up_after:
            return remaining
        elif not warned and stalled > warn_after:
            warned = True
            echo(
                f"no progress for {warn_after:.0f} s: is a worker consuming the maintenance "
                "queue (celery -A envcat.workers worker -Q maintenance)? Values that no "
                "keyring key decrypts are skipped and logged by the worker."
            )
    return 0
