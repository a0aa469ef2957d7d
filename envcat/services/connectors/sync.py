"""One sync run of a link (issue #18): lock, plan and apply (`steps`), report once, finish.

Resumable and idempotent: a run killed half-way is simply run again with the same id
(`envcat.services.connectors.steps` says why that is safe), and the audit events are
built at the end from what the run recorded.

Two-way rule: a name changed on one side only since the last sync is copied to the
other; changed on both sides (or never synced and different) is a conflict, won by the
newest write (provider version time vs the key's updated_at), and reported.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from envcat.models import AuditEvent, Connection, Link, LinkItem, db, utcnow
from envcat.services import audit
from envcat.services.connectors import connections, steps
from envcat.services.connectors.provider import (
    CredentialsRejected,
    ProviderError,
    Throttled,
    Unreachable,
)
from envcat.services.runtime import current
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.connectors.sync")
LOCK_TTL_SECONDS = 15
ACTOR = "system"
# Compare-and-refresh / compare-and-delete of the per-link lock (KEYS[1] lock, ARGV[1] token).
_REFRESH = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


class Busy(Exception):
    """Another worker holds this link's lock (a redelivery while the first run lives)."""


class Transient(Exception):
    """The provider was throttling or unreachable: retry the run later (same run id)."""


@dataclass
class _Lock:
    key: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    refreshed: float = 0.0

    def acquire(self) -> bool:
        self.refreshed = time.monotonic()
        return bool(current().redis.set(self.key, self.token, nx=True, ex=LOCK_TTL_SECONDS))

    def refresh(self) -> None:
        if time.monotonic() - self.refreshed >= 1:
            current().redis.eval(_REFRESH, 1, self.key, self.token, LOCK_TTL_SECONDS)
            self.refreshed = time.monotonic()

    def release(self) -> None:
        current().redis.eval(_RELEASE, 1, self.key, self.token)


def _reported(link: Link, run_id: str) -> set[str]:
    """Audit actions already recorded for this run (a run resumed after its report)."""
    rows = db.session.execute(
        select(AuditEvent.action, AuditEvent.details)
        .where(AuditEvent.tenant_id == link.tenant_id, AuditEvent.target == f"link:{link.id}")
        .order_by(AuditEvent.id.desc())
        .limit(10)
    ).all()
    return {action for action, details in rows if (details or {}).get("run_id") == run_id}


def _end_run(run: steps.Run) -> None:
    """End the run on its link and audit what it changed (names and versions, never
    values), in the caller's transaction: the link's row first, the events last (the
    chain head stays locked until the commit)."""
    rows = (
        db.session.execute(
            select(LinkItem).where(LinkItem.link_id == run.link.id, LinkItem.run_id == run.run_id)
        )
        .scalars()
        .all()
    )
    pulled = [
        {"name": r.name, "version": r.key_version}
        for r in rows
        if r.action and r.action.startswith("pulled")
    ]
    pushed = [
        {"name": r.name, "remote": r.remote_name, "key_version": r.key_version}
        for r in rows
        if r.action and r.action.startswith("pushed")
    ]
    conflicts = [
        {"name": r.name, "winner": "provider" if r.action == "pulled!" else "envcat"}
        for r in rows
        if r.action and r.action.endswith("!")
    ]
    summary = {
        "pulled": len(pulled),
        "pushed": len(pushed),
        "conflicts": sorted(c["name"] for c in conflicts),
        "errors": dict(sorted(run.errors.items())[:50]),
        "error_count": len(run.errors),
    }
    status = "conflict" if conflicts else ("partial" if run.errors else "ok")
    first = "; ".join(f"{k}: {v}" for k, v in sorted(run.errors.items())[:3])
    _finish(run.link.id, run.run_id, status, first, summary)
    done = _reported(run.link, run.run_id)
    base = {"run_id": run.run_id, "connection": run.connection.name}
    for action, entries in (
        ("connector.pulled", pulled),
        ("connector.pushed", pushed),
        ("connector.conflict", conflicts),
    ):
        if entries and action not in done:
            audit.append(
                run.link.tenant_id,
                ACTOR,
                action,
                f"link:{run.link.id}",
                details={**base, "keys": sorted(entries, key=lambda e: str(e["name"]))},
            )


def _finish(link_id: str, run_id: str, status: str, error: str, summary: dict[str, Any]) -> None:
    """End the run's link state, in the caller's transaction."""
    link = db.session.get(Link, link_id)
    if link is None or link.run_id != run_id:
        return
    now = utcnow()
    link.run_id, link.last_status, link.last_error = None, status, error
    link.last_summary, link.last_sync_at = summary, now
    link.next_sync_at = now + timedelta(seconds=link.interval_seconds)


def fail_run(link_id: str, run_id: str, message: str) -> None:
    """End a run with an error the user must act on (no retry)."""
    with transaction():
        _finish(link_id, run_id, "error", message, {})


def sync_link(link_id: str, run_id: str) -> str:
    """Run (or resume) sync run `run_id` of a link. Returns "done", "stale" or "error".

    Raises Busy when another worker holds the link, Transient when the provider is
    throttling or unreachable (the caller retries with the same run id).
    """
    link = db.session.get(Link, link_id)
    if link is None or link.run_id != run_id:
        return "stale"  # finished already, or superseded: a redelivered message is a no-op
    lock = _Lock(f"connector:lock:{link_id}")
    if not lock.acquire():
        raise Busy(link_id)
    try:
        connection = db.session.get(Connection, link.connection_id)
        if connection is None:  # deleted meanwhile (links cascade with it)
            return "stale"
        try:
            store = connections.store_for(connection)
            items = {
                i.name: i
                for i in db.session.execute(
                    select(LinkItem).where(LinkItem.link_id == link.id)
                ).scalars()
            }
            run = steps.Run(link, connection, store, run_id, lock, items)
            steps.apply(run, steps.plan(run))
        except CredentialsRejected as exc:
            db.session.rollback()
            _mark_connection(connection.id, str(exc))
            fail_run(link_id, run_id, str(exc))
            return "error"
        except (Throttled, Unreachable) as exc:
            db.session.rollback()
            raise Transient(str(exc)) from None
        except ProviderError as exc:
            db.session.rollback()
            fail_run(link_id, run_id, str(exc))
            return "error"
        with transaction():  # the run's end and its audit events, committed together
            _end_run(run)
        return "done"
    finally:
        lock.release()


def _mark_connection(connection_id: str, message: str) -> None:
    connection = db.session.get(Connection, connection_id)
    if connection is not None:
        connection.status, connection.status_message = "error", message
        connection.tested_at = utcnow()
        db.session.commit()
