"""Key versions (issue #19): every value a key has held, encrypted, capped, revealable, restorable.

Each write of a key value (create, update, import, rollback) adds a numbered
version holding the new value's ciphertext; the highest number is the current
value, and a key written before versions existed gets its old value recorded
first. Only the last `KEY_VERSIONS_KEPT` are kept. A version's ciphertext is
bound (AES-GCM associated data) to its tenant, key and version number, with
the same keyring as the key itself, so `rotate-kms` re-encrypts it too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import delete, func, inspect, select

from envcat.core.kms import DecryptionError
from envcat.core.schemas.bundles import ImportUndone, KeyVersionList, KeyVersionOut
from envcat.models import AuditEvent, Bundle, BundleKey, Key, KeyVersion, db
from envcat.services import fingerprints
from envcat.services.errors import Conflict, EnvCatError, NotFound
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc, emails_of, get_bundle, get_key
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.versions")


class VersionDecryptionFailed(EnvCatError):
    """A stored version does not decrypt with the configured keyring (server-side damage)."""

    status, code = 500, "decryption_failed"


def bound_id(key_id: str, version: int) -> str:
    """The key id a version's ciphertext is bound to: the key's id and the version number."""
    return f"{key_id}#v{version}"


def _latest(key_id: str) -> int:
    highest = db.session.execute(
        select(func.max(KeyVersion.version)).where(KeyVersion.key_id == key_id)
    ).scalar_one_or_none()
    return int(highest or 0)


def _add(key: Key, number: int, plaintext: str, author: str | None, import_id: str | None) -> None:
    db.session.add(
        KeyVersion(
            key=key,
            tenant_id=key.tenant_id,
            version=number,
            value=current().keyring.encrypt(
                plaintext, tenant_id=key.tenant_id, key_id=bound_id(key.id, number)
            ),
            created_by=author,
            size=len(plaintext.encode("utf-8")),
            import_id=import_id,
            scan_fingerprint=fingerprints.of_value(plaintext),
        )
    )


def _previous(key: Key, stored: str) -> str | None:
    try:
        return current().keyring.decrypt(stored, tenant_id=key.tenant_id, key_id=key.id)
    except DecryptionError:
        log.error(
            "previous value does not decrypt; not kept as a version", extra={"key_id": key.id}
        )
        return None


def record(
    key: Key,
    plaintext: str,
    *,
    author: str | None,
    previous_ciphertext: str | None = None,
    import_id: str | None = None,
) -> int:
    """Add the key's new value as its next version (in the session); return its number.

    `previous_ciphertext` is the stored value before this write: kept first (author
    unknown) when the key has no version yet, so a key older than versions keeps it.
    """
    key.scan_fingerprint = fingerprints.of_value(plaintext)  # the current value's (issue #19)
    # No autoflush: a flush here would take SQLite's write lock in the middle of an import.
    with db.session.no_autoflush:
        number = 0 if inspect(key).pending else _latest(key.id)
        if number == 0 and previous_ciphertext is not None:
            previous = _previous(key, previous_ciphertext)
            if previous is not None:
                number = 1
                _add(key, number, previous, None, None)
        number += 1
        _add(key, number, plaintext, author, import_id)
        kept = current().settings.key_versions_kept
        if number > kept:
            db.session.execute(
                delete(KeyVersion)
                .where(KeyVersion.key_id == key.id, KeyVersion.version <= number - kept)
                .execution_options(synchronize_session=False)
            )
    return number


def _get(key: Key, number: int) -> KeyVersion:
    found = db.session.execute(
        select(KeyVersion).where(KeyVersion.key_id == key.id, KeyVersion.version == number)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"{key.name} has no version {number}.")
    return found


def _decrypt(key: Key, found: KeyVersion) -> str:
    try:
        return current().keyring.decrypt(
            found.value, tenant_id=key.tenant_id, key_id=bound_id(key.id, found.version)
        )
    except DecryptionError:
        raise VersionDecryptionFailed(
            f"Version {found.version} of {key.name} does not decrypt with the configured keyring."
        ) from None


def _out(
    found: KeyVersion, latest: int, emails: dict[str, str], value: str | None
) -> KeyVersionOut:
    return KeyVersionOut(
        version=found.version,
        created_at=as_utc(found.created_at),
        created_by=found.created_by,
        author_email=emails.get(found.created_by or ""),
        size=found.size,
        import_id=found.import_id,
        is_current=found.version == latest,
        value=value,
    )


def list_versions(tenant_id: str, key_id: str) -> KeyVersionList:
    """The key's kept versions, newest first: time, author and size, never the value."""
    key = get_key(tenant_id, key_id)
    rows = list(
        db.session.execute(
            select(KeyVersion)
            .where(KeyVersion.key_id == key.id, KeyVersion.tenant_id == tenant_id)
            .order_by(KeyVersion.version.desc())
        ).scalars()
    )
    latest = rows[0].version if rows else 0
    emails = emails_of({row.created_by for row in rows if row.created_by})
    return KeyVersionList(
        key_id=key.id, name=key.name, versions=[_out(row, latest, emails, None) for row in rows]
    )


def version_out(tenant_id: str, key_id: str, number: int) -> KeyVersionOut:
    """One version's metadata (never its value)."""
    key = get_key(tenant_id, key_id)
    found = _get(key, number)
    return _out(found, _latest(key.id), emails_of({found.created_by or ""}), None)


def reveal_version(actor: Actor, key_id: str, number: int) -> KeyVersionOut:
    """One version with its value in clear; audited (`key.version_revealed`) before it returns."""
    key = get_key(actor.tenant_id, key_id)
    found = _get(key, number)
    value = _decrypt(key, found)
    out = _out(found, _latest(key.id), emails_of({found.created_by or ""}), value)
    with transaction():
        actor.append("key.version_revealed", f"key:{key.id}", {"name": key.name, "version": number})
    return out


def rollback(actor: Actor, key_id: str, number: int) -> KeyVersionOut:
    """Make an old version current again as a new version equal to it; audited."""
    with transaction("The key changed during the rollback; nothing was changed. Retry."):
        key = get_key(actor.tenant_id, key_id)
        value = _decrypt(key, _get(key, number))
        previous = key.value
        key.value = current().keyring.encrypt(value, tenant_id=key.tenant_id, key_id=key.id)
        new_number = record(key, value, author=actor.user_id, previous_ciphertext=previous)
        actor.append(
            "key.rolled_back",
            f"key:{key.id}",
            {"name": key.name, "version": number, "new_version": new_number},
        )
    found = _get(key, new_number)
    return _out(found, new_number, emails_of({actor.user_id}), None)


# ---- undoing an import as one unit ------------------------------------------------------


@dataclass
class _UndoPlan:
    restore: list[tuple[Key, int]] = field(default_factory=list)  # key, version to restore
    delete: list[Key] = field(default_factory=list)  # keys the import created
    detach: list[str] = field(default_factory=list)  # key ids the import only attached


def _import_event(bundle: Bundle, import_id: str) -> AuditEvent:
    events = db.session.execute(
        select(AuditEvent).where(
            AuditEvent.tenant_id == bundle.tenant_id,
            AuditEvent.action.in_(("bundle.imported", "bundle.import_undone")),
            AuditEvent.target == f"bundle:{bundle.id}",
        )
    ).scalars()
    found = [e for e in events if (e.details or {}).get("import_id") == import_id]
    if any(e.action == "bundle.import_undone" for e in found):
        raise Conflict("This import was undone already.")
    imported = [e for e in found if e.action == "bundle.imported"]
    if not imported:
        raise NotFound("No such import in this bundle.")
    return imported[0]


def _plan_undo(bundle: Bundle, import_id: str, created: set[str]) -> _UndoPlan:
    written = db.session.execute(
        select(KeyVersion, Key)
        .join(Key, Key.id == KeyVersion.key_id)
        .where(KeyVersion.import_id == import_id, Key.tenant_id == bundle.tenant_id)
    ).all()
    plan, changed = _UndoPlan(), []
    for found, key in written:
        if _latest(key.id) != found.version:
            changed.append(key.name)
        elif found.version == 1 and key.name in created:
            if _in_other_bundles(key.id, bundle.id):
                changed.append(key.name)  # attached elsewhere since: deleting would reach there
            else:
                plan.delete.append(key)
        elif found.version - 1 < _oldest(key.id):
            changed.append(key.name)  # its previous value is no longer kept
        else:
            plan.restore.append((key, found.version - 1))
    if changed:
        raise Conflict(
            "These keys changed since the import (or lost their previous value); roll them "
            f"back one by one: {', '.join(sorted(changed))}."
        )
    touched = {key.name for _, key in written}
    for name in sorted(created - touched):  # library keys the import only attached
        key_id = db.session.execute(
            select(Key.id).where(Key.tenant_id == bundle.tenant_id, Key.name == name)
        ).scalar_one_or_none()
        if key_id is not None:
            plan.detach.append(key_id)
    return plan


def _in_other_bundles(key_id: str, bundle_id: str) -> bool:
    other = db.session.execute(
        select(BundleKey.bundle_id).where(
            BundleKey.key_id == key_id, BundleKey.bundle_id != bundle_id
        )
    )
    return other.first() is not None


def _oldest(key_id: str) -> int:
    lowest = db.session.execute(
        select(func.min(KeyVersion.version)).where(KeyVersion.key_id == key_id)
    ).scalar_one_or_none()
    return int(lowest or 0)


def undo_import(actor: Actor, bundle_id: str, import_id: str) -> ImportUndone:
    """Undo one import as a unit: restore each value it changed, delete each key it created,
    detach each key it attached. 409 (nothing changed) when a key changed since; audited."""
    with transaction("The keys changed during the undo; nothing was changed. Retry."):
        bundle = get_bundle(actor.tenant_id, bundle_id)
        event = _import_event(bundle, import_id)
        plan = _plan_undo(bundle, import_id, set(event.details.get("created") or []))
        for key, number in plan.restore:
            value = _decrypt(key, _get(key, number))
            previous = key.value
            key.value = current().keyring.encrypt(value, tenant_id=key.tenant_id, key_id=key.id)
            record(key, value, author=actor.user_id, previous_ciphertext=previous)
        deleted = [key.name for key in plan.delete]
        for key in plan.delete:
            db.session.execute(delete(BundleKey).where(BundleKey.key_id == key.id))
            db.session.delete(key)
        if plan.detach:
            db.session.execute(
                delete(BundleKey).where(
                    BundleKey.bundle_id == bundle.id, BundleKey.key_id.in_(plan.detach)
                )
            )
        result = ImportUndone(
            import_id=import_id,
            restored=sorted(key.name for key, _ in plan.restore),
            deleted=sorted(deleted),
            detached=len(plan.detach),
        )
        actor.append(
            "bundle.import_undone",
            f"bundle:{bundle.id}",
            {"bundle": bundle.name, **result.model_dump()},
        )
    return result
