"""Keyring rotation (DESIGN §4): re-encrypt stored values under the primary key.

Each batch is one transaction of conditional UPDATEs (`WHERE id = ? AND value = ?`),
so a value written by someone else since it was read is left as they wrote it
(it is already under the primary key), and a crash mid-batch loses nothing: the
old ciphertext stays valid until its replacement commits. Kept key versions
(`key_versions`, issue #19) are rotated the same way, after the keys, and count
in the progress; so are connector credentials (issue #18) and webhook settings
(issue #17), last. One mechanism (`STORED`) serves every column of ciphertexts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import InstrumentedAttribute

from envcat.core.kms import VERSION, DecryptionError
from envcat.models import Connection, Key, KeyVersion, db
from envcat.services import notification_settings
from envcat.services.connectors.connections import bound_id as connection_bound_id
from envcat.services.runtime import current
from envcat.services.versions import bound_id

log = logging.getLogger("envcat.rotation")
SCAN_CHUNK = 200


@dataclass(frozen=True)
class _Stored:
    """A column of keyring ciphertexts, and the key id each row's associated data binds."""

    what: str  # for the log line of a row that does not decrypt
    row_id: InstrumentedAttribute[Any]
    tenant_id: InstrumentedAttribute[Any]
    value: InstrumentedAttribute[Any]
    extra: tuple[InstrumentedAttribute[Any], ...]  # what `bound` needs besides the row id
    bound: Callable[..., str]  # (row id, *extra) -> the key id of the associated data

    def outdated(self) -> ColumnElement[bool]:
        prefix = f"{VERSION}.{current().keyring.primary_id}."
        return ~self.value.startswith(prefix, autoescape=True)


# Rotated in this order: keys, then kept versions (issue #19), then connector credentials
# (issue #18); webhook settings (issue #17) have a shape of their own.
STORED = (
    _Stored("stored value", Key.id, Key.tenant_id, Key.value, (), lambda key_id: key_id),
    _Stored(
        "stored version",
        KeyVersion.id,
        KeyVersion.tenant_id,
        KeyVersion.value,
        (KeyVersion.key_id, KeyVersion.version),
        lambda _row_id, key_id, number: bound_id(key_id, number),
    ),
    _Stored(
        "connection credentials",
        Connection.id,
        Connection.tenant_id,
        Connection.credentials,
        (),
        connection_bound_id,
    ),
)


def count_outdated() -> int:
    """Number of stored values (keys, kept versions, connector credentials, webhook
    settings) not under the primary key (undecryptable ones included)."""
    counts = (
        db.session.execute(select(func.count()).where(stored.outdated())).scalar_one()
        for stored in STORED
    )
    return sum(int(count) for count in counts) + notification_settings.count_outdated()


def _reencrypt(stored: _Stored, row_id: Any, tenant_id: str, value: str, extra: Any) -> bool:
    key_id = stored.bound(row_id, *extra)
    try:
        fresh = current().keyring.reencrypt(value, tenant_id=tenant_id, key_id=key_id)
    except DecryptionError:
        # Skipped, not fatal: one damaged row must not stop the rotation of the others.
        log.error(f"{stored.what} does not decrypt; left as it is", extra={"row_id": row_id})
        return False
    changed = db.session.execute(
        update(stored.value.class_)
        .where(stored.row_id == row_id, stored.value == value)
        .values({stored.value.key: fresh})
        .execution_options(synchronize_session=False)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


def _rotate(stored: _Stored, budget: int) -> int:
    """Re-encrypt up to `budget` rows of one column, in id order, a chunk at a time."""
    done, after_id = 0, None
    while done < budget:
        query = select(stored.row_id, stored.tenant_id, stored.value, *stored.extra).where(
            stored.outdated()
        )
        if after_id is not None:
            query = query.where(stored.row_id > after_id)
        rows = db.session.execute(
            query.order_by(stored.row_id).limit(min(SCAN_CHUNK, budget - done))
        ).all()
        if not rows:
            break
        for row_id, tenant_id, value, *extra in rows:
            done += _reencrypt(stored, row_id, tenant_id, value, extra)
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
        done = 0
        for stored in STORED:
            if done < batch_size:
                done += _rotate(stored, batch_size - done)
        if done < batch_size:  # webhook URLs and secrets (issue #17)
            done += notification_settings.rotate(batch_size - done)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return done
