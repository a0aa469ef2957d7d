"""Bundles: named, ordered selections of library keys, with .env/JSON import and export.

Each write is one transaction holding its audit event; a failed write (a
bad value, a name taken in a race) is rolled back whole, so the previous state
stays intact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select

from envcat.core.schemas.bundles import (
    AttachKey,
    BundleCreate,
    BundleDetail,
    BundleKeyOut,
    BundleKeysBulk,
    BundleList,
    BundleSummary,
    BundleUpdate,
    CreateAndAttachKey,
)
from envcat.models import Bundle, BundleKey, Key, db, utcnow
from envcat.services import dotenv_io, keys, paging
from envcat.services.errors import Conflict, NotFound
from envcat.services.tenancy import Actor, as_utc, get_bundle, get_key
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.bundles")
EXPORT_TYPES = {
    "dotenv": ("text/plain; charset=utf-8", ".env"),
    "json": ("application/json", ".json"),
}


@dataclass(frozen=True)
class ExportFile:
    """An exported bundle: file name, media type and body."""

    filename: str
    content_type: str
    body: str


def _entries(bundle: Bundle) -> list[tuple[BundleKey, Key]]:
    # The keys' tenant is checked in Python, as in delivery.select_keys: in the WHERE it
    # let PostgreSQL without fresh statistics plan a loop quadratic in the bundle's size.
    rows = db.session.execute(
        select(BundleKey, Key)
        .join(Key, Key.id == BundleKey.key_id)
        .where(BundleKey.bundle_id == bundle.id)
        .order_by(BundleKey.position, Key.name)
    ).all()
    return [(entry, key) for entry, key in rows if key.tenant_id == bundle.tenant_id]


def detail(tenant_id: str, bundle_id: str) -> BundleDetail:
    """A bundle with its keys in position order; secret values masked (null)."""
    bundle = get_bundle(tenant_id, bundle_id)
    return BundleDetail(
        id=bundle.id,
        name=bundle.name,
        description=bundle.description,
        tags=list(bundle.tags),
        created_at=as_utc(bundle.created_at),
        updated_at=as_utc(bundle.updated_at),
        keys=[
            BundleKeyOut(
                id=key.id,
                name=key.name,
                alias=entry.alias,
                export_name=entry.alias or key.name,
                is_secret=key.is_secret,
                required=entry.required,
                position=entry.position,
                description=key.description,
                value=keys.shown_value(key),
            )
            for entry, key in _entries(bundle)
        ],
    )


def list_bundles(
    tenant_id: str, q: str = "", *, limit: int | None = None, cursor: str | None = None
) -> BundleList:
    """The tenant's bundles in name order with key counts; `q` filters by name substring,
    `limit`/`cursor` page them (paging)."""
    # Count only this tenant's attachments, not every tenant's.
    counts = (
        select(BundleKey.bundle_id, func.count().label("n"))
        .join(Bundle, Bundle.id == BundleKey.bundle_id)
        .where(Bundle.tenant_id == tenant_id)
        .group_by(BundleKey.bundle_id)
        .subquery()
    )
    statement = (
        select(Bundle, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.bundle_id == Bundle.id)
        .where(Bundle.tenant_id == tenant_id)
    )
    if q:
        statement = statement.where(paging.name_search(Bundle.name, q))
    found = paging.paginate(statement, Bundle.name, limit=limit, cursor=cursor)
    return BundleList(
        bundles=[
            BundleSummary(
                id=b.id,
                name=b.name,
                description=b.description,
                tags=list(b.tags),
                key_count=int(n),
                created_at=as_utc(b.created_at),
                updated_at=as_utc(b.updated_at),
            )
            for b, n in found.rows
        ],
        total=found.total,
        next_cursor=found.next_cursor,
    )


def _name_taken(tenant_id: str, name: str, other_than: str | None = None) -> bool:
    statement = select(Bundle.id).where(Bundle.tenant_id == tenant_id, Bundle.name == name)
    if other_than is not None:
        statement = statement.where(Bundle.id != other_than)
    return db.session.execute(statement.limit(1)).first() is not None


def create_bundle(actor: Actor, body: BundleCreate) -> BundleDetail:
    """Create an empty bundle; 409 when the tenant already has one with this name."""
    message = f"A bundle named {body.name} already exists."
    with transaction(message):
        if _name_taken(actor.tenant_id, body.name):
            raise Conflict(message)
        bundle = Bundle(
            tenant_id=actor.tenant_id, name=body.name, description=body.description, tags=body.tags
        )
        db.session.add(bundle)
        db.session.flush()  # the id the event names
        actor.append("bundle.created", f"bundle:{bundle.id}", {"name": bundle.name})
    return detail(actor.tenant_id, bundle.id)


def _apply_update(bundle: Bundle, body: BundleUpdate) -> list[str]:
    """Apply the fields that differ; return their names (a form may resend unchanged ones)."""
    changed: list[str] = []
    if body.name is not None and body.name != bundle.name:
        if _name_taken(bundle.tenant_id, body.name, other_than=bundle.id):
            raise Conflict(f"A bundle named {body.name} already exists.")
        bundle.name = body.name
        changed.append("name")
    if body.description is not None and body.description != bundle.description:
        bundle.description = body.description
        changed.append("description")
    if body.tags is not None and body.tags != bundle.tags:
        bundle.tags = body.tags
        changed.append("tags")
    return changed


def update_bundle(actor: Actor, bundle_id: str, body: BundleUpdate) -> BundleDetail:
    """Rename, re-describe or re-tag a bundle; 409 when the new name is taken."""
    with transaction(f"A bundle named {body.name} already exists."):
        bundle = get_bundle(actor.tenant_id, bundle_id)
        old_name = bundle.name
        changed = _apply_update(bundle, body)
        if changed:
            details: dict[str, object] = {"name": old_name, "fields": sorted(changed)}
            if "name" in changed:
                details["new_name"] = bundle.name
            actor.append("bundle.updated", f"bundle:{bundle.id}", details)
    return detail(actor.tenant_id, bundle.id)


def delete_bundle(actor: Actor, bundle_id: str) -> None:
    """Delete a bundle; its keys stay in the library."""
    with transaction():
        bundle = get_bundle(actor.tenant_id, bundle_id)
        name = bundle.name
        db.session.delete(bundle)
        actor.append("bundle.deleted", f"bundle:{bundle_id}", {"name": name})


def next_position(bundle_id: str) -> int:
    """The position after the bundle's last entry."""
    highest = db.session.execute(
        select(func.max(BundleKey.position)).where(BundleKey.bundle_id == bundle_id)
    ).scalar_one_or_none()
    return 0 if highest is None else highest + 1


def exported_names(bundle_id: str) -> set[str]:
    """The variable names a bundle exports: each entry's alias, else its key's name."""
    rows = db.session.execute(
        select(BundleKey.alias, Key.name)
        .join(Key, Key.id == BundleKey.key_id)
        .where(BundleKey.bundle_id == bundle_id)
    ).all()
    return {alias or name for alias, name in rows}


def attach_entry(
    bundle: Bundle,
    key: Key,
    *,
    required: bool,
    position: int | None,
    alias: str | None = None,
    exported: set[str] | None = None,
) -> None:
    """Add the entry; `exported` is the bundle's exported names when the caller has them
    (an import: a query here would flush mid-import), updated with this one."""
    if alias == key.name:
        alias = None  # exporting a key as its own name is no alias
    if alias is not None:
        keys.check_name(alias, dangerous_ok=key.dangerous_ok)
    export_name = alias or key.name
    if exported is None:
        exported = exported_names(bundle.id)
    if export_name in exported:
        raise Conflict(f"This bundle already exports a variable named {export_name}.")
    exported.add(export_name)
    if position is None:
        position = next_position(bundle.id)
    # `key=` (not only key_id) lets the flush insert a new key before its entry.
    db.session.add(
        BundleKey(bundle_id=bundle.id, key=key, required=required, position=position, alias=alias)
    )
    bundle.updated_at = utcnow()


def _attached_event(
    actor: Actor, action: str, bundle: Bundle, key: Key, alias: str | None = None
) -> None:
    details = {"bundle": bundle.name, "key_id": key.id, "key": key.name}
    if alias is not None and alias != key.name:
        details["alias"] = alias
    actor.append(action, f"bundle:{bundle.id}", details)


def attach_key(actor: Actor, bundle_id: str, body: AttachKey) -> BundleDetail:
    """Attach a library key of the same tenant; 409 when it is already attached."""
    with transaction("This key is already in this bundle."):
        bundle = get_bundle(actor.tenant_id, bundle_id)
        key = get_key(actor.tenant_id, body.key_id)
        if db.session.get(BundleKey, (bundle.id, key.id)) is not None:
            raise Conflict(f"{key.name} is already in this bundle.")
        attach_entry(bundle, key, required=body.required, position=body.position, alias=body.alias)
        _attached_event(actor, "bundle.key_attached", bundle, key, body.alias)
    return detail(actor.tenant_id, bundle.id)


def create_and_attach_key(actor: Actor, bundle_id: str, body: CreateAndAttachKey) -> BundleDetail:
    """Create a library key and attach it; 409 when the library has the name already."""
    message = f"A key named {body.name} already exists; attach it by key_id."
    with transaction(message):
        bundle = get_bundle(actor.tenant_id, bundle_id)
        if keys.name_taken(actor.tenant_id, body.name):
            raise Conflict(message)
        key = keys.new_key(
            actor.tenant_id,
            body.name,
            body.value,
            is_secret=body.is_secret,
            description=body.description,
            dangerous_ok=body.dangerous_ok,
            author=actor.user_id,
        )
        attach_entry(bundle, key, required=body.required, position=body.position, alias=body.alias)
        actor.append("key.created", f"key:{key.id}", {"name": key.name, "is_secret": key.is_secret})
        _attached_event(actor, "bundle.key_attached", bundle, key, body.alias)
    return detail(actor.tenant_id, bundle.id)


def detach_key(actor: Actor, bundle_id: str, key_id: str) -> None:
    """Detach a key from a bundle (the key stays in the library); 404 when not attached."""
    with transaction():
        bundle = get_bundle(actor.tenant_id, bundle_id)
        key = get_key(actor.tenant_id, key_id)
        entry = db.session.get(BundleKey, (bundle.id, key.id))
        if entry is None:
            raise NotFound(f"{key.name} is not in this bundle.")
        alias = entry.alias
        db.session.delete(entry)
        bundle.updated_at = utcnow()
        _attached_event(actor, "bundle.key_detached", bundle, key, alias)


def bulk_keys(actor: Actor, bundle_id: str, body: BundleKeysBulk) -> BundleDetail:
    """Attach or detach many library keys in one transaction: all of them or none (issue #15).

    404 names a key that is not the tenant's (or not in the bundle, to detach); 409 one
    already attached or clashing with an exported name. One audit event lists them all.
    """
    ids = list(dict.fromkeys(body.key_ids))
    with transaction("The bundle changed meanwhile; nothing was changed. Retry."):
        bundle = get_bundle(actor.tenant_id, bundle_id)
        chosen = [get_key(actor.tenant_id, key_id) for key_id in ids]
        exported = exported_names(bundle.id) if body.action == "attach" else set()
        position = next_position(bundle.id)
        for key in chosen:
            entry = db.session.get(BundleKey, (bundle.id, key.id))
            if body.action == "detach":
                if entry is None:
                    raise NotFound(f"{key.name} is not in this bundle.")
                db.session.delete(entry)
                bundle.updated_at = utcnow()
                continue
            if entry is not None:
                raise Conflict(f"{key.name} is already in this bundle.")
            attach_entry(bundle, key, required=False, position=position, exported=exported)
            position += 1
        actor.append(
            f"bundle.keys_{body.action}ed",
            f"bundle:{bundle.id}",
            {"bundle": bundle.name, "keys": [k.name for k in chosen], "key_ids": ids},
        )
    return detail(actor.tenant_id, bundle.id)


def export_bundle(actor: Actor, bundle_id: str, fmt: str) -> ExportFile:
    """The bundle's keys and values as a .env or JSON file; audited (`bundle.exported`)."""
    bundle = get_bundle(actor.tenant_id, bundle_id)
    entries = _entries(bundle)
    values = {entry.alias or key.name: keys.decrypt(key) for entry, key in entries}
    aliases = {entry.alias: key.name for entry, key in entries if entry.alias}
    body = (
        dotenv_io.serialise_dotenv(values) if fmt == "dotenv" else dotenv_io.serialise_json(values)
    )
    content_type, suffix = EXPORT_TYPES[fmt]
    with transaction():  # the export is handed out only once its event is committed
        actor.append(
            "bundle.exported",
            f"bundle:{bundle.id}",
            {"bundle": bundle.name, "format": fmt, "keys": list(values)}
            | ({"aliases": aliases} if aliases else {}),
        )
    return ExportFile(bundle.name.replace("/", "_") + suffix, content_type, body)
