"""The steps of one sync run (issue #18): plan from both sides, then apply in batches.

Every write compares values first; pulled versions carry the run id (`import_id`), AWS
writes a request token derived from it, and link items record which run changed which
name, so a run applied twice (after a crash) does each change once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select

from envcat.core.schemas.bundles import is_valid_key_name, value_problem
from envcat.models import BundleKey, Connection, Key, KeyVersion, Link, LinkItem, db, utcnow
from envcat.services import keys
from envcat.services.connectors.provider import MAX_REMOTE_VALUE_BYTES, RemoteValue, SecretStore
from envcat.services.errors import EnvCatError
from envcat.services.tenancy import as_utc

BATCH = 50
TOKEN_NAMESPACE = uuid.UUID("6f1c2d1e-8a4b-4f7e-9d33-0c5a4e7b9a10")


class Heartbeat(Protocol):
    """Keeps the run's lock alive while it works."""

    def refresh(self) -> None:
        """Extend the lock (cheap; rate-limited by the lock itself)."""


@dataclass
class Run:
    """What a run needs while it applies its plan."""

    link: Link
    connection: Connection
    store: SecretStore
    run_id: str
    lock: Heartbeat
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
    run: Run, var: str, remote: str, remote_version: str, key_version: int, action: str | None
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
    run: Run,
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
    run: Run,
    var: str,
    key: Key,
    key_version: int,
    remote: str,
    found: RemoteValue | None,
    conflict: bool,
) -> None:
    try:
        value = keys.decrypt(key)
    except EnvCatError as exc:  # a damaged value: this key fails, the others sync
        run.errors[var] = exc.message
        return
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


def _newest_is_remote(run: Run, remote: str, key: Key) -> bool:
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


def _two_way(run: Run, var: str, key: Key, version: int, arriving: Incoming) -> Step | None:
    """Who wins a name both sides hold: the side that changed, else the newest write."""
    remote_name, found, value = arriving
    try:
        current = keys.decrypt(key)
    except EnvCatError as exc:
        run.errors[var] = exc.message
        return None
    if current == value:
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


def plan(run: Run) -> list[Step]:
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


def apply(run: Run, steps: list[tuple[str, Any]]) -> None:
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
