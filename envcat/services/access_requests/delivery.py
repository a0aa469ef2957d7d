"""Carrying out an approval: choose the keys, decrypt them, seal them to the CLI (DESIGN §4, §6).

`select_keys` is the one rule for "which keys may this approval release", used
synchronously by the approve call and again by the worker, because the world
may have changed in between. `encrypt_from_bundle` is idempotent: a request
that is no longer pending is left alone, and the final change is one atomic
Redis script, so a redelivered or concurrent message cannot deliver twice.

Nothing in Redis or the task message is taken on trust (issue #12): the
request's and the approval's integrity MACs are checked before a key is read.
The values travel in a signed envelope (issue #11, envcat.core.envelope) that
names the workspace, bundle and approver, so the CLI can check them itself.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from envcat.core.envelope import Envelope, encode_key, seal_envelope
from envcat.core.kms import DecryptionError
from envcat.core.wire import unattended_allow_list
from envcat.models import Bundle, BundleKey, Key, Membership, User, db
from envcat.services import (
    approvers,
    audit,
    grants,
    integrity,
    metrics,
    requesters,
    service_tokens,
    workload_access,
    workspaces,
)
from envcat.services.access_requests import store
from envcat.services.access_requests.store import AccessRequest, Approval
from envcat.services.errors import NotFound, ValidationFailed
from envcat.services.runtime import current

log = logging.getLogger("envcat.delivery")
APPROVER_ROLES = frozenset({"owner", "admin", "member"})
SYSTEM_ACTOR = "system"
INTERNAL_FAILURE = "the server could not carry out the approval (internal error); ask again"
TAMPERED = "the approval failed the server's integrity check and was refused; ask again"


@dataclass(frozen=True)
class ChosenKey:
    """A key released by an approval (its id and name; the value stays encrypted).

    `name` is the name it is delivered under: the bundle's alias for it, else its own.
    """

    id: str
    name: str
    value: str  # ciphertext as stored
    library_name: str = ""  # the key's own name when the bundle exports it under an alias


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


def select_keys(tenant_id: str, bundle_id: str, include_keys: Sequence[str]) -> Selection:
    """Check a choice of keys against the tenant's bundle; return them in bundle order.

    Raises NotFound when the bundle is not the tenant's, ValidationFailed when a
    name is not attached, a required key is left out, or nothing is chosen.
    """
    # One statement for the bundle and its entries (outer joins: a bundle without keys is
    # still found). Plain columns, not Key entities: building 1,000 ORM objects cost 4x the
    # decryption. The keys' tenant is checked as rows are read rather than in SQL: with
    # `keys.tenant_id` in the WHERE, PostgreSQL without fresh statistics (a bundle just
    # imported) planned a nested loop quadratic in the bundle's size (257 ms at 1,000 keys).
    rows = db.session.execute(
        select(
            Bundle.name,
            BundleKey.required,
            BundleKey.alias,
            Key.id,
            Key.name,
            Key.value,
            Key.tenant_id,
        )
        .select_from(Bundle)
        .outerjoin(BundleKey, BundleKey.bundle_id == Bundle.id)
        .outerjoin(Key, Key.id == BundleKey.key_id)
        .where(Bundle.id == bundle_id, Bundle.tenant_id == tenant_id)
        .order_by(BundleKey.position, Key.name)
    ).all()
    if not rows:
        raise NotFound("No such bundle.")
    bundle_name = rows[0][0]
    wanted = set(include_keys)
    if not wanted:
        raise ValidationFailed("Choose at least one key.")
    # Approvers tick, and CLIs receive, the exported names (issue #19: aliases). Rows are
    # unpacked as tuples: attribute access by name cost more than the decryption at 1,000 keys.
    exported = [
        (required, alias or name, key_id, name, value)
        for _, required, alias, key_id, name, value, owner in rows
        if owner == tenant_id  # None too: the one row of a bundle without keys
    ]
    attached = {shown for _, shown, _, _, _ in exported}
    if unknown := sorted(wanted - attached):
        raise ValidationFailed(f"Not in bundle {bundle_name}: {', '.join(unknown)}.")
    if missing := [shown for required, shown, *_ in exported if required and shown not in wanted]:
        raise ValidationFailed(f"Required keys left out: {', '.join(missing)}.")
    chosen = [
        ChosenKey(key_id, shown, value, library_name=name)
        for _, shown, key_id, name, value in exported
        if shown in wanted
    ]
    return Selection(bundle_id=bundle_id, bundle_name=bundle_name, keys=chosen)


def _approver_email(tenant_id: str, user_id: str) -> str | None:
    """The approver's email while they may still release values here, else None."""
    row = db.session.execute(
        select(Membership.role, User.email, User.deleted_at)
        .join(User, User.id == Membership.user_id)
        .where(Membership.user_id == user_id, Membership.tenant_id == tenant_id)
    ).one_or_none()
    if row is None or row.role not in APPROVER_ROLES or row.deleted_at is not None:
        return None
    return str(row.email)


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


# Standing approvals no person gave just now: approver prefix, the check that it still
# holds (tenant, id, bundle, keys), and why a delivery fails when it no longer does.
_STANDING = (
    (
        workload_access.APPROVER_PREFIX,
        workload_access.is_still_granted,
        "the workload's trust policy was deleted or narrowed meanwhile",
    ),
    (
        service_tokens.APPROVER_PREFIX,
        service_tokens.is_still_granted,
        "the service token was revoked or expired meanwhile",
    ),
    (grants.APPROVER_PREFIX, grants.is_still_granted, "the device grant was revoked or expired"),
)


def _approver_name(approval: Approval) -> str:
    """Who the envelope says approved: a member's email, or a workload's label (issue #16)."""
    for prefix, still_holds, gone in _STANDING:
        if approval.decided_by.startswith(prefix):
            standing_id = approval.decided_by.removeprefix(prefix)
            if not still_holds(
                approval.tenant_id, standing_id, approval.bundle_id, approval.include_keys
            ):
                raise ValidationFailed(gone)
            return approval.via or approval.decided_by
    email = _approver_email(approval.tenant_id, approval.decided_by)
    if email is None:
        raise ValidationFailed("the approver no longer has the member role in this tenant")
    return email


def _passkey_fields(approval: Approval) -> dict[str, Any]:
    """The envelope's passkey proofs and the approvals the bundle's rule requires (issue #20).

    One proof travels as `passkey`, as before; k-of-n voters' proofs travel as the list
    `passkeys`, ordered by decision time, with `passkey` repeating the last for CLIs that
    read one. The CLI checks the count itself against its own `min_approvals`.
    """
    recorded = json.loads(approval.passkey) if approval.passkey else []
    proofs = recorded if isinstance(recorded, list) else [recorded]
    # A machine's policy or a device grant is not a vote under the rule, and break-glass
    # released past the rule (issue #17) on one owner's word, and says so: a terminal that
    # wants k passkeys sets min_approvals itself.
    unattended = unattended_allow_list(approval.decided_by) is not None
    ruled = not unattended and not approval.break_glass
    required = approvers.approvals_required(approval.tenant_id, approval.bundle_id) if ruled else 1
    return {
        "passkey": proofs[-1] if proofs else None,
        "passkeys": proofs if len(proofs) > 1 else (),
        "approvals_required": required,
    }


def _grant_marker(approval: Approval) -> dict[str, object] | None:
    if not approval.decided_by.startswith(grants.APPROVER_PREFIX):
        return None
    return grants.marker(
        approval.tenant_id, approval.decided_by.removeprefix(grants.APPROVER_PREFIX)
    )


def _grant_still_serves(request: AccessRequest, approval: Approval) -> None:
    """A grant delivery: the bundle's "who may request" rule still admits this requester.

    The api checked it when the request was made; the task may run minutes later behind
    a deep queue, after an admin made the bundle members-only (issue #17).
    """
    if not approval.decided_by.startswith(grants.APPROVER_PREFIX):
        return
    grant_id = approval.decided_by.removeprefix(grants.APPROVER_PREFIX)
    grant = grants.live(approval.tenant_id, grant_id)
    requester = request.context.get(store.REQUESTER_ID_FIELD) or None
    if grant is None or not requesters.grant_applies(grant, requester):
        raise ValidationFailed(
            "the bundle now releases to signed-in members only, and the device grant "
            "does not serve this requester"
        )


def _sealed_envelope(request: AccessRequest, approval: Approval) -> str:
    email = _approver_name(approval)
    _grant_still_serves(request, approval)
    try:
        selection = select_keys(approval.tenant_id, approval.bundle_id, approval.include_keys)
    except NotFound:
        raise ValidationFailed("the bundle was deleted after the approval") from None
    keyring = current().settings.signing_keyring()
    envelope = Envelope(
        request_id=request.id,
        cli_public_key=request.cli_pub,
        workspace_id=approval.tenant_id,
        # the slug the request was made for, under the api's MAC: one query fewer, and a
        # slug renamed meanwhile still matches what the CLI asked
        workspace_slug=request.workspace,
        bundle_id=selection.bundle_id,
        bundle_name=selection.bundle_name,
        approver_id=approval.decided_by,
        approver_email=email,
        approved_at=approval.approved_at,
        keys=_decrypt(approval.tenant_id, selection),
        server_keys=[encode_key(key) for key in keyring.public_keys],
        # issue #20: the passkey proofs the api verified, under the approval MAC since
        **_passkey_fields(approval),
        break_glass={"reason": approval.break_glass} if approval.break_glass else None,
        grant=_grant_marker(approval),  # issue #17
    )
    return base64.b64encode(seal_envelope(envelope, keyring)).decode("ascii")


def _intact_approval(request: AccessRequest, approval_mac: str) -> Approval | None:
    """The recorded approval when Redis and the task agree with the api's MACs, else None."""
    approval = request.approval
    if approval is None or approval.tenant_id != request.tenant_id:
        return None
    if not integrity.is_request_intact(request):
        return None
    if approval_mac != request.approval_mac:
        return None
    if not integrity.is_approval_intact(request, approval, approval_mac):
        return None
    return approval


def encrypt_from_bundle(request_id: str, approval_mac: str) -> bool:
    """Seal the approved keys in a signed envelope to the request's CLI key; True if delivered.

    A request that is no longer pending is left alone (a redelivered message is a
    no-op). One whose stored record or task does not carry the api's MACs is
    refused before any key is read: failed, and audited in its workspace. A
    payload that cannot be carried out marks the request failed, with a message
    naming the key or bundle, never a value.
    """
    r = current().redis
    pending = store.get(r, request_id)
    if pending is None or pending.status != "pending":
        return False
    approval = _intact_approval(pending, approval_mac)
    if approval is None:
        _refuse_tampered(pending)
        return False
    try:
        ciphertext = _sealed_envelope(pending, approval)
    except ValidationFailed as exc:
        fail(request_id, approval.tenant_id, approval.decided_by, exc.message)
        return False
    return store.mark_ready(r, request_id, ciphertext_b64=ciphertext, approval=approval)


def _refuse_tampered(request: AccessRequest) -> None:
    log.warning("request or approval fails its integrity check", extra={"id": request.id})
    metrics.REQUESTS_FAILED.inc()
    if request.tenant_id and workspaces.slug_of(request.tenant_id):
        audit.record(
            request.tenant_id,
            SYSTEM_ACTOR,
            "request.integrity_failed",
            request.id,
            details={"reason": "the stored request or approval does not carry the api's MAC"},
        )
    store.mark_failed(current().redis, request.id, message=TAMPERED)


def fail(request_id: str, tenant_id: str, decided_by: str, message: str) -> bool:
    """Audit `request.failed` and tell the waiting CLI why; True if the request was pending.

    The audit comes first: a crash in between repeats the event rather than losing it.
    """
    audit.record(
        tenant_id,
        SYSTEM_ACTOR,
        "request.failed",
        request_id,
        details={"approved_by": decided_by, "reason": message},
    )
    failed = store.mark_failed(current().redis, request_id, message=message)
    if failed:
        metrics.REQUESTS_FAILED.inc()
    return failed


def fail_unexpectedly(request_id: str) -> bool:
    """Mark a request failed after a bug, so its CLI stops waiting; True if it was pending."""
    db.session.rollback()
    request = store.get(current().redis, request_id)
    if request is None or request.approval is None:
        return False
    return fail(request_id, request.tenant_id, request.approval.decided_by, INTERNAL_FAILURE)
