"""Carrying out an approval: choose the keys, decrypt them, seal them to the CLI (DESIGN §4, §6).

`select_keys` is the one rule for "which keys may this approval release", used
synchronously by the approve call and again by the worker, because the world
may have changed in between. `encrypt_from_bundle` is idempotent: a request
that is no longer pending is left alone, and the final change is one atomic
Redis script, so a redelivered or concurrent message cannot deliver twice.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from envcat.core.kms import DecryptionError
from envcat.core.sealing import seal_values
from envcat.models import Bundle, BundleKey, Key, Membership, db
from envcat.services import access_requests, audit, metrics
from envcat.services.errors import NotFound, ValidationFailed
from envcat.services.runtime import current

log = logging.getLogger("envcat.delivery")
APPROVER_ROLES = frozenset({"owner", "admin", "member"})
SYSTEM_ACTOR = "system"
INTERNAL_FAILURE = "the server could not carry out the approval (internal error); ask again"


@dataclass(frozen=True)
class ChosenKey:
    """A key released by an approval (its id and name; the value stays encrypted)."""

    id: str
    name: str
    value: str  # ciphertext as stored


@dataclass(frozen=True)
class Selection:
    """The keys an approval releases, in bundle order."""

    bundle_id: str
    bundle_name: str
    keys: list[ChosenKey]

    @property
    def names(self) -> list[str]:
        """Key names in bundle order."""
        return [key.name for key in self.keys]


def approval_record(
    tenant_id: str, user_id: str, bundle_id: str, include_keys: Sequence[str]
) -> dict[str, Any]:
    """What the api records in Redis when it accepts an approval; the task must match it."""
    return {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "bundle_id": bundle_id,
        "include_keys": list(include_keys),
    }


def select_keys(tenant_id: str, bundle_id: str, include_keys: Sequence[str]) -> Selection:
    """Check a choice of keys against the tenant's bundle; return them in bundle order.

    Raises NotFound when the bundle is not the tenant's, ValidationFailed when a
    name is not attached, a required key is left out, or nothing is chosen.
    """
    bundle = db.session.execute(
        select(Bundle).where(Bundle.id == bundle_id, Bundle.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if bundle is None:
        raise NotFound("No such bundle.")
    # Plain columns, not Key entities: building 1,000 ORM objects cost 4x the decryption.
    rows = db.session.execute(
        select(BundleKey.required, Key.id, Key.name, Key.value)
        .join(Key, Key.id == BundleKey.key_id)
        .where(BundleKey.bundle_id == bundle.id, Key.tenant_id == tenant_id)
        .order_by(BundleKey.position, Key.name)
    ).all()
    wanted = set(include_keys)
    if not wanted:
        raise ValidationFailed("Choose at least one key.")
    attached = {row.name for row in rows}
    if unknown := sorted(wanted - attached):
        raise ValidationFailed(f"Not in bundle {bundle.name}: {', '.join(unknown)}.")
    if missing := [row.name for row in rows if row.required and row.name not in wanted]:
        raise ValidationFailed(f"Required keys left out: {', '.join(missing)}.")
    chosen = [ChosenKey(row.id, row.name, row.value) for row in rows if row.name in wanted]
    return Selection(bundle_id=bundle.id, bundle_name=bundle.name, keys=chosen)


def _approver_may_release(tenant_id: str, user_id: str) -> bool:
    role = db.session.execute(
        select(Membership.role).where(
            Membership.user_id == user_id, Membership.tenant_id == tenant_id
        )
    ).scalar_one_or_none()
    return role in APPROVER_ROLES


def _decrypt(tenant_id: str, selection: Selection) -> dict[str, str]:
    keyring = current().keyring
    values: dict[str, str] = {}
    for key in selection.keys:
        try:
            values[key.name] = keyring.decrypt(key.value, tenant_id=tenant_id, key_id=key.id)
        except DecryptionError:
            log.error("key value does not decrypt", extra={"key_id": key.id})
            raise ValidationFailed(
                f"the value of {key.name} does not decrypt with the server's keyring"
            ) from None
    return values


def _sealed_values(
    tenant_id: str, user_id: str, bundle_id: str, names: Sequence[str], cli_pub: str
) -> str:
    if not _approver_may_release(tenant_id, user_id):
        raise ValidationFailed("the approver no longer has the member role in this tenant")
    try:
        selection = select_keys(tenant_id, bundle_id, names)
    except NotFound:
        raise ValidationFailed("the bundle was deleted after the approval") from None
    return base64.b64encode(seal_values(cli_pub, _decrypt(tenant_id, selection))).decode("ascii")


def encrypt_from_bundle(
    request_id: str, tenant_id: str, user_id: str, bundle_id: str, include_keys: list[str]
) -> bool:
    """Seal the approved keys to the request's CLI key and mark it ready; True if delivered.

    A request that is no longer pending, or whose recorded approval differs from
    these arguments, is left alone (a redelivered or stray message is a no-op).
    A payload that cannot be carried out marks the request failed, with a
    message naming the key or bundle, never a value.
    """
    r = current().redis
    pending = access_requests.get(r, request_id)
    if pending is None or pending.status != "pending":
        return False
    if pending.approval != approval_record(tenant_id, user_id, bundle_id, include_keys):
        log.warning("task does not match the recorded approval", extra={"id": request_id})
        return False
    try:
        ciphertext = _sealed_values(tenant_id, user_id, bundle_id, include_keys, pending.cli_pub)
    except ValidationFailed as exc:
        fail(request_id, tenant_id, user_id, exc.message)
        return False
    return access_requests.mark_ready(
        r,
        request_id,
        ciphertext_b64=ciphertext,
        approved_by=user_id,
        tenant_id=tenant_id,
        bundle_id=bundle_id,
    )


def fail(request_id: str, tenant_id: str, user_id: str, message: str) -> bool:
    """Audit `request.failed` and tell the waiting CLI why; True if the request was pending.

    The audit comes first: a crash in between repeats the event rather than losing it.
    """
    audit.record(
        tenant_id,
        SYSTEM_ACTOR,
        "request.failed",
        request_id,
        details={"approved_by": user_id, "reason": message},
    )
    failed = access_requests.mark_failed(current().redis, request_id, message=message)
    if failed:
        metrics.REQUESTS_FAILED.inc()
    return failed


def fail_unexpectedly(request_id: str, tenant_id: str, user_id: str) -> bool:
    """Mark a request failed after a bug, so its CLI stops waiting; True if it was pending."""
    db.session.rollback()
    return fail(request_id, tenant_id, user_id, INTERNAL_FAILURE)
