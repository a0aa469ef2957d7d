"""Scan fingerprints of key values (issue #19): find the workspace's own values in a repository.

Every write of a value (key or kept version) stores `HMAC(scan key, SHA-256(value))` as
`<scan key id>:<hex>`; values under MIN_VALUE_LENGTH characters get none. No unkeyed hash
is stored, so a database dump alone cannot confirm a guessed value. A scanner sends the
SHA-256 of its candidate strings; `matching_names` keys each with every scan key the
server knows and answers key names only, never a value or a fingerprint.

The scan key is SCAN_FINGERPRINT_KEY, or else derived from each BUNDLE_KMS_KEY entry
(primary first): during a keyring rotation both the new and the old derived key match,
and `refresh` rewrites what is not under the first key yet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, select, update

from envcat.core.kms import DecryptionError, key_id_of
from envcat.models import Key, KeyVersion, db
from envcat.services import versions
from envcat.services.runtime import current

log = logging.getLogger("envcat.fingerprints")
MIN_VALUE_LENGTH = 12
_DERIVATION_LABEL = b"envcat-scan-fingerprint-v1"
_QUERY_CHUNK = 500


@lru_cache(maxsize=8)
def _keys_from(explicit: str | None, keyring: str) -> tuple[tuple[str, bytes], ...]:
    if explicit is not None:
        raw = [base64.urlsafe_b64decode(explicit.strip().encode("ascii"))]
    else:
        raw = [
            hmac.new(base64.urlsafe_b64decode(entry.strip()), _DERIVATION_LABEL, "sha256").digest()
            for entry in keyring.split(",")
            if entry.strip()
        ]
    return tuple((key_id_of(key), key) for key in raw)


def scan_keys() -> tuple[tuple[str, bytes], ...]:
    """The scan keys as (id, key), the one new fingerprints use first."""
    settings = current().settings
    explicit = settings.scan_fingerprint_key
    return _keys_from(
        explicit.get_secret_value() if explicit is not None else None, settings.kms_key_value()
    )


def _keyed(kid: str, key: bytes, digest: bytes) -> str:
    return f"{kid}:{hmac.new(key, digest, hashlib.sha256).hexdigest()}"


def of_value(value: str) -> str | None:
    """The fingerprint stored for a value under the first scan key; None when too short."""
    if len(value) < MIN_VALUE_LENGTH:
        return None
    kid, key = scan_keys()[0]
    return _keyed(kid, key, hashlib.sha256(value.encode("utf-8")).digest())


def matching_names(tenant_id: str, sha256_hexes: Iterable[str]) -> dict[str, list[str]]:
    """Which submitted SHA-256 hashes are a current or kept value of which key names."""
    wanted: dict[str, str] = {}
    for text in dict.fromkeys(sha256_hexes):
        digest = bytes.fromhex(text)
        for kid, key in scan_keys():
            wanted[_keyed(kid, key, digest)] = text
    found: dict[str, set[str]] = {}
    prints = list(wanted)
    for start in range(0, len(prints), _QUERY_CHUNK):
        chunk = prints[start : start + _QUERY_CHUNK]
        current_rows = db.session.execute(
            select(Key.scan_fingerprint, Key.name).where(
                Key.tenant_id == tenant_id, Key.scan_fingerprint.in_(chunk)
            )
        ).all()
        kept_rows = db.session.execute(
            select(KeyVersion.scan_fingerprint, Key.name)
            .join(Key, Key.id == KeyVersion.key_id)
            .where(KeyVersion.tenant_id == tenant_id, KeyVersion.scan_fingerprint.in_(chunk))
        ).all()
        for fingerprint, name in [*current_rows, *kept_rows]:
            found.setdefault(wanted[str(fingerprint)], set()).add(name)
    return {text: sorted(names) for text, names in found.items()}


@dataclass
class Refreshed:
    """What one `refresh` pass did (counts only)."""

    fingerprinted: int = 0
    too_short: int = 0
    undecryptable: int = 0


def _stale(column: ColumnElement[str | None]) -> ColumnElement[bool]:
    prefix = f"{scan_keys()[0][0]}:"
    return column.is_(None) | ~column.startswith(prefix, autoescape=True)


def refresh(batch_size: int = 200) -> Refreshed:
    """Fingerprint every value and kept version not yet under the first scan key.

    Backfills values written before fingerprints existed, and re-keys after a scan
    key change. Each batch commits; a re-run continues where a stopped one left off
    (short values are re-read and again left without a fingerprint).
    """
    done = Refreshed()
    keyring = current().keyring
    targets: tuple[tuple[Any, Callable[[Any], str]], ...] = (
        (Key, lambda row: str(row.id)),
        (KeyVersion, lambda row: versions.bound_id(row.key_id, row.version)),
    )
    for model, key_id_of_row in targets:
        last: object = None
        while True:
            statement = select(model).where(_stale(model.scan_fingerprint)).order_by(model.id)
            if last is not None:
                statement = statement.where(model.id > last)
            rows = list(db.session.execute(statement.limit(batch_size)).scalars())
            if not rows:
                break
            for row in rows:
                try:
                    plaintext = keyring.decrypt(
                        row.value, tenant_id=row.tenant_id, key_id=key_id_of_row(row)
                    )
                except DecryptionError:
                    log.error("value does not decrypt; no fingerprint", extra={"row": str(row.id)})
                    done.undecryptable += 1
                    continue
                fingerprint = of_value(plaintext)
                done.too_short += fingerprint is None
                done.fingerprinted += fingerprint is not None
                db.session.execute(
                    update(model).where(model.id == row.id).values(scan_fingerprint=fingerprint)
                )
            db.session.commit()
            last = rows[-1].id
    return done
