"""Keyring rotation (DESIGN §4): re-encrypt stored values under the primary key.

Each batch is one transaction of conditional UPDATEs (`WHERE id = ? AND value = ?`),
so a value written by someone else since it was read is left as they wrote it
(it is already under the primary key), and a crash mid-batch loses nothing: the
old ciphertext stays valid until its replacement commits. Kept key versions
(`key_versions`, issue #19) are rotated the same way, after the keys, and count
in the progress; so are connector credentials (issue #18), last.
"""

from __future__ import annotations

import logging

from sqlalchemy import ColumnElement, func, select, update

from envcat.core.kms import VERSION, DecryptionError
from envcat.models import Connection, Key, KeyVersion, db
from envcat.services import notification_settings
from envcat.services.connectors.connections import bound_id as connection_bound_id
from envcat.services.runtime import current
from envcat.services.versions import bound_id

log = logging.getLogger("envcat.rotation")
SCAN_CHUNK = 200


def _outdated_clause() -> ColumnElement[bool]:
    prefix = f"{VERSION}.{current().keyring.primary_id}."
    return ~Key.value.startswith(prefix, autoescape=True)


def _outdated_version_clause() -> ColumnElement[bool]:
    prefix = f"{VERSION}.{current().keyring.primary_id}."
    return ~KeyVersion.value.startswith(prefix, autoescape=True)


def _outdated_connection_clause() -> ColumnElement[bool]:
    prefix = f"{VERSION}.{current().keyring.primary_id}."
    return ~Connection.credentials.startswith(prefix, autoescape=True)


def count_outdated() -> int:
    """Number of stored values (keys, kept versions, connector credentials) not under the
    primary key (undecryptable ones included)."""
    keys = db.session.execute(select(func.count()).select_from(Key).where(_outdated_clause()))
    kept = db.session.execute(
        select(func.count()).select_from(KeyVersion).where(_outdated_version_clause())
    )
    credentials = db.session.execute(
        select(func.count()).select_from(Connection).where(_outdated_connection_clause())
    )
    return (
        int(keys.scalar_one())
        + int(kept.scalar_one())
        + int(credentials.scalar_one())
        + notification_settings.count_outdated()
    )


def _candidates(after_id: str, limit: int) -> list[tuple[str, str, str]]:
    rows = db.session.execute(
        select(Key.id, Key.tenant_id, Key.value)
        .where(_outdated_clause(), Key.id > after_id)
        .order_by(Key.id)
        .limit(limit)
    ).all()
    return [(key_id, tenant_id, value) for key_id, tenant_id, value in rows]


def _reencrypt(key_id: str, tenant_id: str, value: str) -> bool:
    try:
        fresh = current().keyring.reencrypt(value, tenant_id=tenant_id, key_id=key_id)
    except DecryptionError:
        # Skipped, not fatal: one damaged row must not stop the rotation of the others.
        log.error("stored value does not decrypt; left as it is", extra={"key_id": key_id})
        return False
    changed = db.session.execute(
        update(Key)
        .where(Key.id == key_id, Key.value == value)
        .values(value=fresh)
        .execution_options(synchronize_session=False)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


def _version_candidates(after_id: int, limit: int) -> list[tuple[int, str, str, int, str]]:
    rows = db.session.execute(
        select(
            KeyVersion.id,
            KeyVersion.key_id,
            KeyVersion.tenant_id,
            KeyVersion.version,
            KeyVersion.value,
        )
        .where(_outdated_version_clause(), KeyVersion.id > after_id)
        .order_by(KeyVersion.id)
        .limit(limit)
    ).all()
    return [
        (row_id, key_id, tenant, number, value) for row_id, key_id, tenant, number, value in rows
    ]


def _reencrypt_version(row_id: int, key_id: str, tenant_id: str, number: int, value: str) -> bool:
    try:
        fresh = current().keyring.reencrypt(
            value, tenant_id=tenant_id, key_id=bound_id(key_id, number)
        )
    except DecryptionError:
        log.error("stored version does not decrypt; left as it is", extra={"key_id": key_id})
        return False
    changed = db.session.execute(
        update(KeyVersion)
        .where(KeyVersion.id == row_id, KeyVersion.value == value)
        .values(value=fresh)
        .execution_options(synchronize_session=False)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


def _rotate_keys(budget: int) -> int:
    done, after_id = 0, ""
    while done < budget:
        rows = _candidates(after_id, min(SCAN_CHUNK, budget - done))
        if not rows:
            break
        done += sum(_reencrypt(*row) for row in rows)
        after_id = rows[-1][0]
    return done


def _rotate_versions(budget: int) -> int:
    done, after_id = 0, 0
    while done < budget:
        rows = _version_candidates(after_id, min(SCAN_CHUNK, budget - done))
        if not rows:
            break
        done += sum(_reencrypt_version(*row) for row in rows)
        after_id = rows[-1][0]
    return done


def _rotate_connections(budget: int) -> int:
    done, after_id = 0, ""
    while done < budget:
        rows = db.session.execute(
            select(Connection.id, Connection.tenant_id, Connection.credentials)
            .where(_outdated_connection_clause(), Connection.id > after_id)
            .order_by(Connection.id)
            .limit(min(SCAN_CHUNK, budget - done))
        ).all()
        if not rows:
            break
        for connection_id, tenant_id, stored in rows:
            try:
                fresh = current().keyring.reencrypt(
                    stored, tenant_id=tenant_id, key_id=connection_bound_id(connection_id)
                )
            except DecryptionError:
                log.error(
                    "connection credentials do not decrypt; left as they are",
                    extra={"connection_id": connection_id},
                )
                continue
            changed = db.session.execute(
                update(Connection)
                .where(Connection.id == connection_id, Connection.credentials == stored)
                .values(credentials=fresh)
                .execution_options(synchronize_session=False)
            )
            done += int(changed.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE
        after_id = rows[-1][0]
    return done


def rotate_batch(batch_size: int) -> int:
    """Re-encrypt up to `batch_size` values in one transaction; return how many changed.

    Values that do not decrypt are skipped (and logged by key id), so a return of 0
    means nothing more can be rotated, even if `count_outdated()` is not 0.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    try:
        done = _rotate_keys(batch_size)
        if done < batch_size:
            done += _rotate_versions(batch_size - done)
        if done < batch_size:  # webhook URLs and secrets (issue #17)
            done += notification_settings.rotate(batch_size - done)
        if done < batch_size:
            done += _rotate_connections(batch_size - done)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return done
