"""One sync run of a link (issue #18): plan from both sides, apply in batches, report once.

Resumable and idempotent: every write compares values first, pulled key versions carry
the run id (`import_id`), AWS writes carry a request token derived from it (and AWS makes
it the version id), and link items record which run changed which name. A run killed
half-way is simply run again with the same id: what was done is seen as done, the rest
is done, and the audit events are built at the end from what the run recorded.

Two-way rule: a name changed on one side only since the last sync is copied to the
other; changed on both sides (or never synced and different) is a conflict, won by the
newest write (provider version time vs the key's updated_at), and reported.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from envcat.core.schemas.bundles import is_valid_key_name, value_problem
from envcat.models import (
    AuditEvent,
    BundleKey,
    Connection,
    Key,
    KeyVersion,
    Link,
    LinkItem,
    db,
    utcnow,
)
from envcat.services import audit, keys
from envcat.services.connectors import connections
from envcat.services.connectors.provider import (
    MAX_REMOTE_VALUE_BYTES,
    CredentialsRejected,
    ProviderError,
    RemoteValue,
    SecretStore,
    Throttled,
    Unreachable,
)
from envcat.services.errors import EnvCatError
from envcat.services.runtime import current
from envcat.services.tenancy import as_utc

log = logging.getLogger("envcat.connectors.sync")
BATCH = 50
LOCK_TTL_SECONDS = 15
TOKEN_NAMESPACE = uuid.UUID("6f1c2d1e-8a4b-4f7e-9d33-0c5a4e7b9a10")
ACTOR = "system"
AUDITED = ("connector.pulled", "connector.pushed", "connector.conflict")
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


@dataclass
class _Run:
    """What a run needs while it applies its plan."""

    link: Link
    connection: Connection
    store: SecretStore
    run_id: str
    lock: _Lock
    items: dict[str, LinkItem]
    errors: dict[str, str] = field(default_factory=dict)
    next_position: int = 0  # of the next key this run attaches to the bundle


def _remote_name(link: Link, var: str) -> str:
    for remote, mapped in (link.mapping or {}).items():
        if mapped == var:
            return remote
    return link.prefix + var


def _var_of(link: Link, remote: str) -> str | None:
    mapping = link.mapping or {}
    if remote in mapping:
        return mapping[remote]
    if remote.startswith(link.prefix):
        return remote[len(link.prefix) :]
    return None


def _bundle_keys(link: Link) -> dict[str, Key]:
    rows = db.session.execute(
        select(BundleKey.alias, Key)
        .join(Key, Key.id == BundleKey.key_id)
        .where(BundleKey.bundle_id == link.bundle_id)
    ).all()
    return {alias or key.name: key for alias, key in rows}


def _key_versions(key_ids: list[str]) -> dict[str, int]:
    if not key_ids:
        return {}
    rows = db.session.execute(
        select(KeyVersion.key_id, func.max(KeyVersion.version))
        .where(KeyVersion.key_id.in_(key_ids))
        .group_by(KeyVersion.key_id)
    ).all()
    return {key_id: int(number) for key_id, number in rows}


def _pulled_in_run(key: Key, run_id: str) -> bool:
    return (
        db.session.execute(
            select(KeyVersion.id).where(KeyVersion.key_id == key.id, KeyVersion.import_id == run_id)
        ).first()
        is not None
    )


def _remember(
    run: _Run, var: str, remote: str, remote_version: str, key_version: int, action: str | None
) -> None:
    item = run.items.get(var)
    if item is None:
        item = LinkItem(link_id=run.link.id, name=var)
        db.session.add(item)
        run.items[var] = item
    item.remote_name, item.remote_version, item.key_version = remote, remote_version, key_version
    item.synced_at = utcnow()
    if action is not None:
        item.run_id, item.action = run.run_id, action


def _expand(link: Link, remote: str, value: str) -> dict[str, str] | None:
    """The variables one provider secret becomes, or None when its name maps to none."""
    if link.expand_json:
        try:
            members = json.loads(value)
        except ValueError:
            members = None
        if isinstance(members, dict):
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in members.items()}
    var = _var_of(link, remote)
    return None if var is None else {var: value}


def _pull_one(
    run: _Run,
    var: str,
    remote: str,
    found: RemoteValue,
    value: str,
    library: dict[str, Key],
    exported: dict[str, Key],
    conflict: bool,
) -> None:
    if not is_valid_key_name(var):
        run.errors[var] = f"{remote}: {var!r} is not a valid variable name"
        return
    if problem := value_problem(value):
        run.errors[var] = f"{remote}: the value {problem}"
        return
    key = library.get(var)
    holder = exported.get(var)
    if holder is not None and (key is None or holder.id != key.id):
        run.errors[var] = f"the bundle already exports another key as {var}"
        return
    action: str | None = None
    try:
        if key is None:
            key = keys.new_key(
                run.link.tenant_id,
                var,
                value,
                is_secret=True,
                description=f"Pulled from {run.connection.name}",
                author=None,
                import_id=run.run_id,
            )
            library[var], version, action = key, 1, "pulled"
        elif keys.decrypt(key) != value:
            keys.check_name(var, dangerous_ok=key.dangerous_ok)
            version, action = (
                keys.set_value(key, value, author=None, import_id=run.run_id),
                "pulled",
            )
        else:
            version = _key_versions([key.id]).get(key.id, 1)
            if _pulled_in_run(key, run.run_id):
                action = "pulled"  # this run wrote it before a crash
    except EnvCatError as exc:
        run.errors[var] = exc.message
        return
    if holder is None:
        db.session.add(BundleKey(bundle_id=run.link.bundle_id, key=key, position=run.next_position))
        run.next_position += 1
        exported[var] = key
        action = action or "pulled"
    if conflict and action:
        action += "!"
    _remember(run, var, remote, found.version, version, action)


def _push_one(
    run: _Run,
    var: str,
    key: Key,
    key_version: int,
    remote: str,
    found: RemoteValue | None,
    conflict: bool,
) -> None:
    value = keys.decrypt(key)
    if len(value.encode("utf-8")) > MAX_REMOTE_VALUE_BYTES:
        run.errors[var] = f"the value is larger than the provider's {MAX_REMOTE_VALUE_BYTES} bytes"
        return
    token = str(uuid.uuid5(TOKEN_NAMESPACE, f"{run.run_id}:{remote}"))
    if found is not None and found.value == value:
        # Ours if AWS holds it under this run's request token (written before a crash).
        action = "pushed" if found.version == token else None
        _remember(run, var, remote, found.version, key_version, action)
        return
    version = run.store.write(remote, value, exists=found is not None, token=token)
    _remember(run, var, remote, version, key_version, "pushed!" if conflict else "pushed")


def _newest_is_remote(run: _Run, remote: str, key: Key) -> bool:
    changed = run.store.changed_at(remote)
    return changed is not None and as_utc(changed) > as_utc(key.updated_at)


Incoming = tuple[str, RemoteValue, str]  # provider name, its current version, the value
Step = tuple[str, tuple[Any, ...]]  # ("pull", pull args) or ("push", push args)


def _incoming(link: Link, remote: dict[str, RemoteValue]) -> dict[str, Incoming]:
    out: dict[str, Incoming] = {}
    for remote_name, found in remote.items():
        for var, value in (_expand(link, remote_name, found.value) or {}).items():
            out[var] = (remote_name, found, value)
    return out


def _two_way(run: _Run, var: str, key: Key, version: int, arriving: Incoming) -> Step | None:
    """Who wins a name both sides hold: the side that changed, else the newest write."""
    remote_name, found, value = arriving
    if keys.decrypt(key) == value:
        _remember(run, var, remote_name, found.version, version, None)
        return None
    item = run.items.get(var)
    key_changed = item is None or item.key_version != version
    remote_changed = item is None or item.remote_version != found.version
    conflict = key_changed and remote_changed
    pull = _newest_is_remote(run, remote_name, key) if conflict else remote_changed
    if pull:
        return ("pull", (var, *arriving, conflict))
    return ("push", (var, key, version, remote_name, found, conflict))


def _plan(run: _Run) -> list[Step]:
    """The steps of this run, in name order."""
    link = run.link
    bundle = _bundle_keys(link) if link.direction != "pull" else {}
    versions = _key_versions([k.id for k in bundle.values()])
    listing = None if link.direction == "push" else link.prefix
    extra = list(link.mapping or {}) + [_remote_name(link, v) for v in bundle]
    remote = run.store.snapshot(listing, extra) if listing is not None or extra else {}
    incoming = _incoming(link, remote) if link.direction != "push" else {}
    steps: list[Step] = []
    for var in sorted(set(incoming) | set(bundle)):
        key, arriving = bundle.get(var), incoming.get(var)
        if key is None:
            if arriving is not None:
                steps.append(("pull", (var, *arriving, False)))
            continue
        version = versions.get(key.id, 1)
        remote_name = _remote_name(link, var)
        if arriving is None or link.direction == "push":
            found = remote.get(remote_name)
            steps.append(("push", (var, key, version, remote_name, found, False)))
            continue
        step = _two_way(run, var, key, version, arriving)
        if step is not None:
            steps.append(step)
    return steps


def _apply(run: _Run, steps: list[tuple[str, Any]]) -> None:
    """Apply the steps, committing every BATCH so a crash keeps what was done."""
    library = {
        k.name: k
        for k in db.session.execute(
            select(Key).where(Key.tenant_id == run.link.tenant_id)
        ).scalars()
    }
    exported = _bundle_keys(run.link)
    run.next_position = db.session.execute(
        select(func.coalesce(func.max(BundleKey.position) + 1, 0)).where(
            BundleKey.bundle_id == run.link.bundle_id
        )
    ).scalar_one()
    for start in range(0, len(steps), BATCH):
        # No autoflush: each batch is written at its commit, not statement by statement.
        with db.session.no_autoflush:
            for kind, args in steps[start : start + BATCH]:
                run.lock.refresh()
                if kind == "pull":
                    var, remote, found, value, conflict = args
                    _pull_one(run, var, remote, found, value, library, exported, conflict)
                else:
                    _push_one(run, *args)
        db.session.commit()
    db.session.commit()


def _reported(link: Link, run_id: str) -> set[str]:
    """Audit actions already recorded for this run (a run resumed after its report)."""
    rows = db.session.execute(
        select(AuditEvent.action, AuditEvent.details)
        .where(AuditEvent.tenant_id == link.tenant_id, AuditEvent.target == f"link:{link.id}")
        .order_by(AuditEvent.id.desc())
        .limit(10)
    ).all()
    return {action for action, details in rows if (details or {}).get("run_id") == run_id}


def _report(run: _Run) -> dict[str, Any]:
    """Audit what this run changed (names and versions, never values); return the summary."""
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
    done = _reported(run.link, run.run_id)
    base = {"run_id": run.run_id, "connection": run.connection.name}
    for action, entries in (
        ("connector.pulled", pulled),
        ("connector.pushed", pushed),
        ("connector.conflict", conflicts),
    ):
        if entries and action not in done:
            audit.record(
                run.link.tenant_id,
                ACTOR,
                action,
                f"link:{run.link.id}",
                details={**base, "keys": sorted(entries, key=lambda e: str(e["name"]))},
            )
    return {
        "pulled": len(pulled),
        "pushed": len(pushed),
        "conflicts": sorted(c["name"] for c in conflicts),
        "errors": dict(sorted(run.errors.items())[:50]),
        "error_count": len(run.errors),
    }


def _finish(link_id: str, run_id: str, status: str, error: str, summary: dict[str, Any]) -> None:
    link = db.session.get(Link, link_id)
    if link is None or link.run_id != run_id:
        db.session.rollback()
        return
    now = utcnow()
    link.run_id, link.last_status, link.last_error = None, status, error
    link.last_summary, link.last_sync_at = summary, now
    link.next_sync_at = now + timedelta(seconds=link.interval_seconds)
    db.session.commit()


def fail_run(link_id: str, run_id: str, message: str) -> None:
    """End a run with an error the user must act on (no retry)."""
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
            run = _Run(link, connection, store, run_id, lock, items)
            _apply(run, _plan(run))
            summary = _report(run)
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
        status = "conflict" if summary["conflicts"] else ("partial" if run.errors else "ok")
        first = "; ".join(f"{k}: {v}" for k, v in sorted(run.errors.items())[:3])
        _finish(link_id, run_id, status, first, summary)
        return "done"
    finally:
        lock.release()


def _mark_connection(connection_id: str, message: str) -> None:
    connection = db.session.get(Connection, connection_id)
    if connection is not None:
        connection.status, connection.status_message = "error", message
        connection.tested_at = utcnow()
        db.session.commit()
