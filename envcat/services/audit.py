"""The append-only audit log, hash-chained per tenant (tampering is detectable)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Select, or_, select, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from envcat.core.schemas.audit import (
    AuditEventOut,
    AuditPage,
    AuditPeople,
    AuditQuery,
    PersonOut,
    TargetKind,
)
from envcat.core.wire import REQUEST_ID_RE, TOKEN_ACTOR_PREFIX
from envcat.models import AuditEvent, Bundle, Key, ServiceToken, User, db, utcnow
from envcat.services.errors import AuditUnavailable, ValidationFailed
from envcat.services.transactions import in_transaction, transaction

GENESIS = "0" * 64
AUDIT_FAILED = "The audit log could not record this, so nothing was changed; retry."
log = logging.getLogger("envcat.audit")


@dataclass(frozen=True)
class Origin:
    """Where an action came from (taken from the HTTP request by the view)."""

    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class Entry:
    """One event to append (`append_all`, `Ledger.record`): who did what, to what, from where."""

    actor: str
    action: str
    target: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    origin: Origin = field(default_factory=Origin)


class ChainFields(Protocol):
    """What the chain hash covers (an AuditEvent, or a row read back from a backup)."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def user_agent(self) -> str | None: ...
    @property
    def details(self) -> dict[str, Any]: ...


def hashed_fields(event: ChainFields, at: datetime) -> dict[str, Any]:
    """What the chain hash covers, as it is hashed (and exported: an auditor recomputes it)."""
    return {
        "tenant_id": event.tenant_id,
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "at": at.isoformat(timespec="microseconds"),
        "details": event.details,
    }


def _digest(prev_hash: str, event: ChainFields, at: datetime) -> str:
    body = hashed_fields(event, at)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _as_utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; the chain hashes an aware UTC form.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _lock_chain(tenant_id: str) -> None:
    """Hold the tenant's chain head until this transaction ends, so no other writer
    can append between our read of the head and our commit.

    PostgreSQL: a per-tenant advisory lock. SQLite has one writer at a time, but
    pysqlite (legacy transaction mode) opens a transaction only before a write, so
    a SELECT of the head alone would read outside it; a write that touches no row
    opens the transaction and takes SQLite's write lock (waiting out another
    writer through the busy timeout) before the head is read.
    """
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        db.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:chain))"), {"chain": f"audit:{tenant_id}"}
        )
    elif dialect == "sqlite":
        db.session.execute(text("UPDATE audit_events SET id = id WHERE 0"))


def _last_hash(tenant_id: str) -> str:
    last = db.session.execute(
        select(AuditEvent.hash)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return last or GENESIS


def append(
    tenant_id: str,
    actor: str,
    action: str,
    target: str = "",
    *,
    details: dict[str, Any] | None = None,
    origin: Origin | None = None,
) -> AuditEvent:
    """Add one event to the tenant's chain in the caller's `transaction()`: flushed, not
    committed, so it commits or fails with the change it records (issue #13).

    Never pass a secret value in `details`. The chain head stays locked until the
    transaction ends, so append last: after the change (flushed here first).
    """
    entry = Entry(actor, action, target, details or {}, origin or Origin())
    return append_all(tenant_id, [entry])[0]


def append_all(tenant_id: str, entries: Sequence[Entry]) -> list[AuditEvent]:
    """`append` for several events of one tenant, in order: one lock of the chain, one
    read of its head, one flush (issue #22: a batch of deliveries costs one unit)."""
    if not in_transaction():
        raise RuntimeError("audit.append joins a unit of work: call it inside transaction()")
    db.session.flush()  # the change first: its row locks come before the chain's lock
    try:
        return _add_events(tenant_id, entries)
    except OperationalError:
        raise  # the database is away or busy: transient, as for any write (workers retry it)
    except SQLAlchemyError:
        # The store refused the event itself (the change was flushed above, so this is not
        # the change's conflict): say so; the caller's transaction rolls the change back.
        actions = ",".join(sorted({entry.action for entry in entries}))
        log.exception("audit append failed", extra={"tenant_id": tenant_id, "action": actions})
        raise AuditUnavailable(AUDIT_FAILED) from None


def _add_events(tenant_id: str, entries: Sequence[Entry]) -> list[AuditEvent]:
    _lock_chain(tenant_id)
    prev_hash = _last_hash(tenant_id)  # held until the commit: nobody appends meanwhile
    events = []
    for entry in entries:
        at = utcnow()
        event = AuditEvent(
            tenant_id=tenant_id,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            ip=entry.origin.ip,
            user_agent=(entry.origin.user_agent or "")[:512] or None,
            at=at,
            details=entry.details,
            prev_hash=prev_hash,
        )
        event.hash = prev_hash = _digest(prev_hash, event, _as_utc(at))
        db.session.add(event)
        events.append(event)
    db.session.flush()
    return events


def record(
    tenant_id: str,
    actor: str,
    action: str,
    target: str = "",
    *,
    details: dict[str, Any] | None = None,
    origin: Origin | None = None,
) -> AuditEvent:
    """Append one event as its own unit of work and commit it (inside another
    `transaction()` it joins that one): for something that happened outside the database
    (a delivery, a denial, a vote in Redis), with no change of its own."""
    with transaction():
        return append(tenant_id, actor, action, target, details=details, origin=origin)


class Ledger:
    """One-event units of work from many requests of a process, committed together.

    For events recorded after the reply (a delivery's `request.delivered`, issue #22).
    This is group commit: `record` returns once its event is committed (or its unit
    refused and logged), as `record` above does; a caller that finds another caller's
    unit committing leaves its event and waits for that unit to end, and then the first
    of those waiting writes every event left meanwhile as one unit per workspace
    (`append_all`: one lock of the chain, one read of its head). So a lone delivery
    costs what it did, and a burst's deliveries share units instead of queueing one by
    one on the workspace's chain lock, each holding a database connection while it
    waits. Nobody writes more than one batch, so nobody waits for more than two units.
    A unit the database refuses is logged with its events' targets and actions (never
    their details) and dropped, as a lone event's failure was.
    """

    def __init__(self, what: str) -> None:
        self._what = what  # for the log: "a delivery", say
        self._changed = threading.Condition()  # gevent's under the api's monkey-patching
        self._waiting: list[tuple[str, Entry]] = []
        self._writing = False
        self._left = 0  # events ever left here: event n is the n-th (0-based)
        self._done = 0  # events 0 .. done-1 are written or logged

    @property
    def waiting(self) -> int:
        """Events left for the next unit (those of the unit committing now not counted)."""
        with self._changed:
            return len(self._waiting)

    def record(self, tenant_id: str, entry: Entry) -> None:
        """Append `entry` to the tenant's chain, alone or with others left meanwhile."""
        with self._changed:
            mine = self._left
            self._left += 1
            self._waiting.append((tenant_id, entry))
            while self._writing and self._done <= mine:
                self._changed.wait()
            if self._done > mine:  # another caller's batch carried it
                return
            self._writing = True
            batch, self._waiting = self._waiting, []
            upto = self._left
        try:
            self._write(batch)
        finally:  # written or logged (or the greenlet killed: the process is going away)
            with self._changed:
                self._writing = False
                self._done = upto
                self._changed.notify_all()

    def _write(self, batch: list[tuple[str, Entry]]) -> None:
        by_tenant: dict[str, list[Entry]] = {}
        for tenant_id, entry in batch:
            by_tenant.setdefault(tenant_id, []).append(entry)
        for tenant_id, entries in by_tenant.items():
            try:
                with transaction():
                    append_all(tenant_id, entries)
            except Exception:  # the database refused it, or a bug: others' events too, so log
                log.error(
                    "could not audit %s",
                    self._what,
                    extra={
                        "tenant_id": tenant_id,
                        "events": len(entries),
                        "action": ",".join(sorted({entry.action for entry in entries})),
                        "id": [entry.target for entry in entries],
                    },
                    exc_info=True,
                )


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


def chain_hash(prev_hash: str, event: ChainFields, at: datetime) -> str:
    """The hash an event with these fields must carry after `prev_hash` (as verify_chain checks)."""
    return _digest(prev_hash, event, _as_utc(at))


def tenants_with_events() -> list[str]:
    """Every tenant id that has an audit log (for `envcat server verify-audit`)."""
    return list(db.session.execute(select(AuditEvent.tenant_id).distinct()).scalars())


# ---- reading the log -----------------------------------------------------------------

# Actors that are not people: the CLI collecting its values, the workers and sweeps.
MACHINE_ACTORS = frozenset({"cli", "system"})


def _encode_cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{event_id}".encode("ascii")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not (raw.startswith("a") and raw[1:].isdigit() and len(raw) < 20):
        raise ValidationFailed("The cursor is not one this api handed out.")
    return int(raw[1:])


def stored_time(at: datetime) -> datetime:
    # SQLite keeps naive UTC text: compare with naive UTC there, aware elsewhere.
    if db.session.get_bind().dialect.name == "sqlite":
        return at.astimezone(UTC).replace(tzinfo=None)
    return at


def _filters(query: AuditQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.action is not None:
        conditions.append(AuditEvent.action.startswith(query.action, autoescape=True))
    if query.actor is not None:
        approved_by = AuditEvent.details["approved_by"].as_string()
        conditions.append(or_(AuditEvent.actor == query.actor, approved_by == query.actor))
    if query.bundle_id is not None:
        in_details = AuditEvent.details["bundle_id"].as_string() == query.bundle_id
        conditions.append(or_(AuditEvent.target == f"bundle:{query.bundle_id}", in_details))
    if query.target is not None:
        conditions.append(AuditEvent.target == query.target)
    if query.since is not None:
        conditions.append(AuditEvent.at >= stored_time(query.since))
    if query.until is not None:
        conditions.append(AuditEvent.at < stored_time(query.until))
    return conditions


def _statement(tenant_id: str, query: AuditQuery) -> Select[AuditEvent]:
    statement = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id, *_filters(query))
    if query.cursor is not None:
        statement = statement.where(AuditEvent.id < _decode_cursor(query.cursor))
    return statement.order_by(AuditEvent.id.desc()).limit(query.limit + 1)


def list_events(tenant_id: str, query: AuditQuery) -> AuditPage:
    """One page of the tenant's log, newest first, filtered, with names and the next cursor."""
    rows = list(db.session.execute(_statement(tenant_id, query)).scalars().all())
    page = rows[: query.limit]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > query.limit else None
    events, people = describe(tenant_id, page)
    return AuditPage(events=events, next_cursor=next_cursor, people=people)


def describe(
    tenant_id: str, rows: list[AuditEvent]
) -> tuple[list[AuditEventOut], dict[str, PersonOut]]:
    """Events as the api shows them (targets and bundles named), and the people they mention."""
    targets = [_split_target(e) for e in rows]
    names = _current_names(tenant_id, rows, targets)
    events = [
        _event_out(event, kind, target_id, names)
        for event, (kind, target_id) in zip(rows, targets, strict=True)
    ]
    mentioned = [e.actor for e in rows] + [_approver(e) for e in rows]
    return events, _people(tenant_id, mentioned)


def list_people(tenant_id: str) -> AuditPeople:
    """Every user who acted in the tenant's log, by email (the person filter's choices)."""
    actors = db.session.execute(
        select(AuditEvent.actor).where(AuditEvent.tenant_id == tenant_id).distinct()
    ).scalars()
    people = _people(tenant_id, actors)
    return AuditPeople(people=sorted(people.values(), key=lambda p: (p.email or p.id).lower()))


def _approver(event: AuditEvent) -> str:
    value = event.details.get("approved_by") if isinstance(event.details, dict) else None
    return value if isinstance(value, str) else ""


def _people(tenant_id: str, ids: Iterable[str]) -> dict[str, PersonOut]:
    """Users by email and name; an admin service token's caller (`token:<id>`, issue #16)
    by its name, when it is this tenant's token (a revoked token keeps its row and name)."""
    wanted = {i for i in ids if i and i not in MACHINE_ACTORS}
    tokens = {
        i.removeprefix(TOKEN_ACTOR_PREFIX) for i in wanted if i.startswith(TOKEN_ACTOR_PREFIX)
    }
    people: dict[str, PersonOut] = {}
    if users := wanted - {TOKEN_ACTOR_PREFIX + t for t in tokens}:
        found = db.session.execute(select(User).where(User.id.in_(users))).scalars()
        people |= {u.id: PersonOut(id=u.id, email=u.email, name=u.name) for u in found}
    if tokens:
        named = db.session.execute(
            select(ServiceToken.id, ServiceToken.name).where(
                ServiceToken.id.in_(tokens), ServiceToken.tenant_id == tenant_id
            )
        ).all()
        for token_id, name in named:
            actor = TOKEN_ACTOR_PREFIX + token_id
            people[actor] = PersonOut(id=actor, email=None, name=f"service token {name}")
    return people


def _split_target(event: AuditEvent) -> tuple[TargetKind, str]:
    target = event.target or ""
    kind, _, rest = target.partition(":")
    if kind in ("bundle", "key") and rest:
        return ("bundle" if kind == "bundle" else "key"), rest
    if event.action.startswith("request.") and REQUEST_ID_RE.fullmatch(target):
        return "request", target
    return ("other", target) if target else ("none", "")


def _details(event: AuditEvent) -> dict[str, Any]:
    return event.details if isinstance(event.details, dict) else {}


def _bundle_of(event: AuditEvent, kind: TargetKind, target_id: str) -> str | None:
    if kind == "bundle":
        return target_id
    value = _details(event).get("bundle_id")
    return value if isinstance(value, str) and value else None


def _current_names(
    tenant_id: str, page: list[AuditEvent], targets: list[tuple[TargetKind, str]]
) -> dict[tuple[str, str], str]:
    wanted: dict[str, set[str]] = {"bundle": set(), "key": set()}
    for event, (kind, target_id) in zip(page, targets, strict=True):
        if kind in wanted:
            wanted[kind].add(target_id)
        if bundle_id := _bundle_of(event, kind, target_id):
            wanted["bundle"].add(bundle_id)
    names: dict[tuple[str, str], str] = {}
    for kind, model in (("bundle", Bundle), ("key", Key)):
        if wanted[kind]:
            rows = db.session.execute(
                select(model.id, model.name).where(
                    model.tenant_id == tenant_id, model.id.in_(wanted[kind])
                )
            )
            names.update({(kind, row_id): name for row_id, name in rows})
    return names


def _recorded(event: AuditEvent, *fields: str) -> str | None:
    details = _details(event)
    for field_name in fields:
        if isinstance(value := details.get(field_name), str) and value:
            return value
    return None


def _event_out(
    event: AuditEvent, kind: TargetKind, target_id: str, names: dict[tuple[str, str], str]
) -> AuditEventOut:
    current = names.get((kind, target_id))
    recorded = _recorded(event, "name", "bundle") if kind == "bundle" else None
    if kind == "key":
        recorded = _recorded(event, "name")
    bundle_id = _bundle_of(event, kind, target_id)
    bundle_now = names.get(("bundle", bundle_id)) if bundle_id else None
    return AuditEventOut(
        id=event.id,
        actor=event.actor,
        action=event.action,
        target=event.target,
        target_kind=kind,
        target_id=target_id,
        target_name=current or recorded,
        target_exists=current is not None,
        bundle_id=bundle_id,
        bundle_name=(bundle_now or _recorded(event, "bundle_name", "bundle", "name"))
        if bundle_id
        else None,
        bundle_exists=bundle_now is not None,
        ip=event.ip,
        user_agent=event.user_agent,
        at=_as_utc(event.at),
        details=event.details,
    )
