"""The tenant's key library: names, encrypted values, and who may see them.

Values are encrypted with the keyring before they reach the session, bound to
the tenant and the key's own id (generated first, so it is in the AAD). A
plaintext never goes to the database, a log line or an exception message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import aliased

from envcat.core.kms import DecryptionError
from envcat.core.schemas.bundles import KeyCreate, KeyList, KeyOut, KeyUpdate
from envcat.core.wire import is_dangerous_name
from envcat.models import BundleKey, Key, db, new_uuid
from envcat.services import paging, versions
from envcat.services.errors import Conflict, EnvCatError, ValidationFailed
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc, get_key
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.keys")


class DecryptionFailed(EnvCatError):
    """A stored value does not decrypt with the configured keyring (server-side damage)."""

    status, code = 500, "decryption_failed"


def check_name(name: str, *, dangerous_ok: bool) -> None:
    """Refuse a name that changes how programs load or run (LD_PRELOAD, BASH_ENV, PATH…)
    unless an admin marked the key `dangerous_ok` (issue #11; the CLI refuses them too)."""
    if is_dangerous_name(name) and not dangerous_ok:
        raise ValidationFailed(
            f"{name} changes how programs load or run; EnvCat refuses such names unless the "
            "key is marked dangerous_ok (and each CLI must still allow it with --allow-var)."
        )


def new_key(
    tenant_id: str,
    name: str,
    value: str,
    *,
    is_secret: bool,
    description: str,
    dangerous_ok: bool = False,
    author: str | None = None,
    import_id: str | None = None,
) -> Key:
    """Add a library key to the session (not committed), its value encrypted under its id.

    The value is also kept as the key's first version (`envcat.services.versions`).
    """
    check_name(name, dangerous_ok=dangerous_ok)
    key_id = new_uuid()
    ciphertext = current().keyring.encrypt(value, tenant_id=tenant_id, key_id=key_id)
    key = Key(
        id=key_id,
        tenant_id=tenant_id,
        name=name,
        value=ciphertext,
        is_secret=is_secret,
        description=description,
        dangerous_ok=dangerous_ok,
    )
    db.session.add(key)
    versions.record(key, value, author=author, import_id=import_id)
    return key


def set_value(key: Key, value: str, *, author: str | None, import_id: str | None = None) -> int:
    """Replace a key's value (re-encrypted under the same tenant and key id), keeping the
    previous one as a version; return the new version's number."""
    previous = key.value
    key.value = current().keyring.encrypt(value, tenant_id=key.tenant_id, key_id=key.id)
    return versions.record(
        key, value, author=author, previous_ciphertext=previous, import_id=import_id
    )


def decrypt(key: Key) -> str:
    """Return a key's plaintext, or raise DecryptionFailed naming the key (never the value)."""
    try:
        return current().keyring.decrypt(key.value, tenant_id=key.tenant_id, key_id=key.id)
    except DecryptionError:
        log.error("key value does not decrypt", extra={"key_id": key.id})
        raise DecryptionFailed(
            f"The value of {key.name} does not decrypt with the configured keyring."
        ) from None


def shown_value(key: Key) -> str | None:
    """The value a listing shows: null for a secret key (or for one that does not decrypt)."""
    if key.is_secret:
        return None
    try:
        return decrypt(key)
    except DecryptionFailed:
        return None


def name_taken(tenant_id: str, name: str, *, other_than: str | None = None) -> bool:
    """True when the tenant's library already has a key called `name`."""
    statement = select(Key.id).where(Key.tenant_id == tenant_id, Key.name == name)
    if other_than is not None:
        statement = statement.where(Key.id != other_than)
    return db.session.execute(statement.limit(1)).first() is not None


def export_clash(key_id: str, name: str) -> bool:
    """True when a bundle exports this key under its own name and another key as `name`."""
    own, other = aliased(BundleKey), aliased(BundleKey)
    statement = (
        select(own.bundle_id)
        .join(other, other.bundle_id == own.bundle_id)
        .where(own.key_id == key_id, own.alias.is_(None), other.alias == name)
    )
    return db.session.execute(statement.limit(1)).first() is not None


def _bundle_counts(key_ids: Iterable[str]) -> dict[str, int]:
    ids = list(key_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        select(BundleKey.key_id, func.count())
        .where(BundleKey.key_id.in_(ids))
        .group_by(BundleKey.key_id)
    ).all()
    return {key_id: count for key_id, count in rows}


def _out(key: Key, bundle_count: int, value: str | None) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        is_secret=key.is_secret,
        description=key.description,
        value=value,
        bundle_count=bundle_count,
        dangerous_ok=key.dangerous_ok,
        created_at=as_utc(key.created_at),
        updated_at=as_utc(key.updated_at),
    )


def list_keys(
    tenant_id: str, q: str = "", *, limit: int | None = None, cursor: str | None = None
) -> KeyList:
    """The tenant's library in name order; `q` is a case-insensitive substring of the name,
    `limit`/`cursor` page it (paging)."""
    statement = select(Key).where(Key.tenant_id == tenant_id)
    if q:
        statement = statement.where(paging.name_search(Key.name, q))
    found = paging.paginate(statement, Key.name, limit=limit, cursor=cursor)
    keys = [row[0] for row in found.rows]
    counts = _bundle_counts(k.id for k in keys)
    return KeyList(
        keys=[_out(k, counts.get(k.id, 0), shown_value(k)) for k in keys],
        total=found.total,
        next_cursor=found.next_cursor,
    )


def key_out(tenant_id: str, key_id: str) -> KeyOut:
    """One library key, its value masked when secret."""
    key = get_key(tenant_id, key_id)
    return _out(key, _bundle_counts([key.id]).get(key.id, 0), shown_value(key))


def reveal_key(actor: Actor, key_id: str) -> KeyOut:
    """One library key with its value in clear; audited (`key.revealed`) before it is returned."""
    key = get_key(actor.tenant_id, key_id)
    value = decrypt(key)
    out = _out(key, _bundle_counts([key.id]).get(key.id, 0), value)
    with transaction():
        actor.append("key.revealed", f"key:{key.id}", {"name": key.name})
    return out


def create_key(actor: Actor, body: KeyCreate) -> KeyOut:
    """Create a library key; 409 when the name is taken."""
    message = f"A key named {body.name} already exists."
    with transaction(message):
        if name_taken(actor.tenant_id, body.name):
            raise Conflict(message)
        key = new_key(
            actor.tenant_id,
            body.name,
            body.value,
            is_secret=body.is_secret,
            description=body.description,
            dangerous_ok=body.dangerous_ok,
            author=actor.user_id,
        )
        actor.append("key.created", f"key:{key.id}", {"name": key.name, "is_secret": key.is_secret})
    return key_out(actor.tenant_id, key.id)


def _apply_update(key: Key, body: KeyUpdate, author: str) -> list[str]:
    """Apply the fields that differ; return their names (a form may resend unchanged ones)."""
    changed: list[str] = []
    if body.dangerous_ok is not None and body.dangerous_ok != key.dangerous_ok:
        key.dangerous_ok = body.dangerous_ok
        changed.append("dangerous_ok")
    check_name(body.name or key.name, dangerous_ok=key.dangerous_ok)
    if body.name is not None and body.name != key.name:
        if name_taken(key.tenant_id, body.name, other_than=key.id):
            raise Conflict(f"A key named {body.name} already exists.")
        if export_clash(key.id, body.name):
            raise Conflict(f"A bundle with this key already exports another key as {body.name}.")
        key.name = body.name
        changed.append("name")
    if body.value is not None and body.value != decrypt(key):
        set_value(key, body.value, author=author)
        changed.append("value")
    if body.is_secret is not None and body.is_secret != key.is_secret:
        key.is_secret = body.is_secret
        changed.append("is_secret")
    if body.description is not None and body.description != key.description:
        key.description = body.description
        changed.append("description")
    return changed


def update_key(actor: Actor, key_id: str, body: KeyUpdate) -> KeyOut:
    """Rename, re-value, re-describe or (un)mark a key as secret; 409 on a taken name."""
    with transaction(f"A key named {body.name} already exists."):
        key = get_key(actor.tenant_id, key_id)
        old_name = key.name
        changed = _apply_update(key, body, actor.user_id)
        if changed:
            details: dict[str, object] = {"name": old_name, "fields": sorted(changed)}
            if "name" in changed:
                details["new_name"] = key.name
            actor.append("key.updated", f"key:{key.id}", details)
    return key_out(actor.tenant_id, key.id)


def delete_key(actor: Actor, key_id: str) -> None:
    """Delete a library key and detach it from every bundle."""
    with transaction():
        key = get_key(actor.tenant_id, key_id)
        name = key.name
        detached = len(
            db.session.execute(select(BundleKey.bundle_id).where(BundleKey.key_id == key.id)).all()
        )
        db.session.execute(delete(BundleKey).where(BundleKey.key_id == key.id))
        db.session.delete(key)
        actor.append("key.deleted", f"key:{key_id}", {"name": name, "detached_from": detached})
