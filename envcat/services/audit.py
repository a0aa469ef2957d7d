"""The append-only audit log, hash-chained per tenant (tampering is detectable)."""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from envcat.models import AuditEvent, db, utcnow

GENESIS = "0" * 64
CHAIN_RETRIES = 40
BACKOFF_STEP_SECONDS = 0.005


@dataclass(frozen=True)
class Origin:
    """Where an action came from (taken from the HTTP request by the view)."""

    ip: str | None = None
    user_agent: str | None = None


def _digest(prev_hash: str, event: AuditEvent, at: datetime) -> str:
    body = {
        "tenant_id": event.tenant_id,
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "at": at.isoformat(timespec="microseconds"),
        "details": event.details,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _as_utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; the chain hashes an aware UTC form.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _lock_chain(tenant_id: str) -> None:
    """On PostgreSQL, serialise appends per tenant until commit (no retries needed)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:chain))"), {"chain": f"audit:{tenant_id}"}
        )


def _last_hash(tenant_id: str) -> str:
    last = db.session.execute(
        select(AuditEvent.hash)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return last or GENESIS


def record(
    tenant_id: str,
    actor: str,
    action: str,
    target: str = "",
    *,
    details: dict[str, Any] | None = None,
    origin: Origin | None = None,
) -> AuditEvent:
    """Append one event and commit it. Never pass a secret value in `details`.

    PostgreSQL appends take a per-tenant advisory lock. Elsewhere (SQLite) two
    writers racing on one tenant collide on UNIQUE(tenant_id, prev_hash); the
    loser backs off, re-reads the head and tries again, so the chain never forks.
    """
    origin = origin or Origin()
    for attempt in range(CHAIN_RETRIES):
        _lock_chain(tenant_id)
        prev_hash = _last_hash(tenant_id)
        at = utcnow()
        event = AuditEvent(
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            target=target,
            ip=origin.ip,
            user_agent=(origin.user_agent or "")[:512] or None,
            at=at,
            details=details or {},
            prev_hash=prev_hash,
        )
        event.hash = _digest(prev_hash, event, _as_utc(at))
        db.session.add(event)
        try:
            db.session.commit()
            return event
        except IntegrityError:
            db.session.rollback()
            time.sleep(random.uniform(0, BACKOFF_STEP_SECONDS * (attempt + 1)))  # noqa: S311
    raise RuntimeError(f"audit chain for tenant {tenant_id} is too contended")


@dataclass(frozen=True)
class ChainReport:
    """Result of walking one tenant's chain."""

    tenant_id: str
    events: int
    broken_at: int | None

    @property
    def is_intact(self) -> bool:
        return self.broken_at is None


def verify_chain(tenant_id: str) -> ChainReport:
    """Recompute every hash of a tenant's log; report the first event that does not match."""
    prev_hash = GENESIS
    count = 0
    rows = db.session.execute(
        select(AuditEvent).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.id)
    ).scalars()
    for event in rows:
        count += 1
        if event.prev_hash != prev_hash or event.hash != _digest(
            prev_hash, event, _as_utc(event.at)
        ):
            return ChainReport(tenant_id, count, event.id)
        prev_hash = event.hash
    return ChainReport(tenant_id, count, None)


def tenants_with_events() -> list[str]:
    """Every tenant id that has an audit log (for `envcat server verify-audit`)."""
    return list(db.session.execute(select(AuditEvent.tenant_id).distinct()).scalars())
