"""Device grants (issue #17): "also trust this device for this bundle for N hours".

A grant is made by the approval that releases a request (for a k-of-n bundle, the
final vote), only when the bundle's grant policy allows grants (none by default) and
only for the device that signed that request. Later requests signed by the same
device key, for the same bundle and a subset of the granted keys, are approved at once
through the automatic path workloads use (`envcat.services.access_requests.device`), audited
`request.granted`. Revoking or expiring a grant stops the next request; the worker
checks again just before it seals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from envcat.core import wire
from envcat.core.schemas.grants import (
    MAX_GRANT_HOURS,
    GrantList,
    GrantOut,
    GrantPolicy,
)
from envcat.models import Bundle, BundleGrantPolicy, DeviceGrant, User, db, utcnow
from envcat.services import integrity
from envcat.services.errors import NotFound, ValidationFailed
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc, emails_of, get_bundle
from envcat.services.transactions import transaction

APPROVER_PREFIX = wire.GRANT_APPROVER_PREFIX  # Approval.user_id of a delivery under a grant
# The clock grants expire by; tests replace it (no sleeping past an expiry).
now: Callable[[], datetime] = utcnow


def device_key(request_id: str) -> str:
    """Redis: the fingerprint of the device that signed a request, with the api's MAC."""
    return f"req:{request_id}:dev"


def remember_device(request_id: str, cli_pub: str, device: str, ttl: int) -> None:
    """Record which device signed the request (MACed, living as long as the request)."""
    mac = integrity.device_mac(request_id, cli_pub, device)
    current().redis.set(device_key(request_id), f"{device}#{mac}", ex=max(1, ttl))


def device_of(request_id: str, cli_pub: str) -> str | None:
    """The verified device of a request, or None (unsigned, expired, or altered in Redis)."""
    stored = current().redis.get(device_key(request_id))
    if not stored:
        return None
    device, _, mac = str(stored).rpartition("#")
    return device if integrity.is_device_intact(request_id, cli_pub, device, mac) else None


def max_hours(tenant_id: str, bundle_id: str) -> int:
    """The bundle's grant limit in hours; 0 (no grants) unless an admin turned them on."""
    row = db.session.get(BundleGrantPolicy, bundle_id)
    return row.max_hours if row is not None and row.tenant_id == tenant_id else 0


def get_policy(tenant_id: str, bundle_id: str) -> GrantPolicy:
    """GET /bundles/{id}/grant-policy."""
    get_bundle(tenant_id, bundle_id)
    return GrantPolicy(max_hours=max_hours(tenant_id, bundle_id))


def set_policy(actor: Actor, bundle_id: str, body: GrantPolicy) -> GrantPolicy:
    """Set the bundle's grant limit (admin+, checked by the view); audited. 0 turns grants
    off for new approvals; grants already made stay until they expire or are revoked."""
    get_bundle(actor.tenant_id, bundle_id)
    with transaction():
        row = db.session.get(BundleGrantPolicy, bundle_id)
        if row is None:
            row = BundleGrantPolicy(bundle_id=bundle_id, tenant_id=actor.tenant_id)
            db.session.add(row)
        row.max_hours = body.max_hours
        row.updated_by = actor.user_id
        actor.append(
            "bundle.grant_policy_changed",
            bundle_id,
            details={"bundle_id": bundle_id, "max_hours": body.max_hours},
        )
    return body


def check_grant(
    tenant_id: str, bundle_id: str, device: str | None, hours: int, *, break_glass: bool = False
) -> str:
    """The device a grant of `hours` would trust, or ValidationFailed (nothing recorded yet).

    `break_glass`: an owner approving alone past a k-of-n rule must never leave standing
    access behind, so such an approval may not create a grant (the hook for that path).
    """
    if break_glass:
        raise ValidationFailed("A break-glass approval cannot trust a device; approve without.")
    limit = max_hours(tenant_id, bundle_id)
    if limit == 0:
        raise ValidationFailed("This bundle does not allow grants; an admin can turn them on.")
    if hours > min(limit, MAX_GRANT_HOURS):
        raise ValidationFailed(f"Grants for this bundle last at most {limit} hours.")
    if device is None:
        raise ValidationFailed("This request was not signed by a device key; it cannot be trusted.")
    return device


def stage(
    tenant_id: str,
    bundle_id: str,
    device: str,
    keys: Sequence[str],
    approved_by: str,
    approvers: Sequence[str],
    request_id: str,
    hours: int,
    requester_id: str | None = None,
) -> DeviceGrant:
    """Add the grant to the caller's transaction (committed with the approval's event).

    `approved_by` cast the vote that released the request and ticked the grant;
    `approvers` are every voter of its k-of-n approval; `requester_id` the request's
    signed-in requester, if any ("who may request", `envcat.services.requesters`).
    """
    grant = DeviceGrant(
        tenant_id=tenant_id,
        bundle_id=bundle_id,
        device_fingerprint=device,
        keys=list(keys),
        approved_by=approved_by,
        approvers=sorted(set(approvers) | {approved_by}),
        request_id=request_id,
        requester_id=requester_id,
        created_at=now(),
        expires_at=now() + timedelta(hours=hours),
    )
    db.session.add(grant)
    db.session.flush()  # the id, for the audit details
    return grant


def _is_active(grant: DeviceGrant) -> bool:
    return grant.revoked_at is None and as_utc(grant.expires_at) > now()


def find_usable(
    tenant_id: str,
    device: str,
    bundle: str | None,
    bundle_id: str | None,
    template_keys: Sequence[str],
    accept: Callable[[DeviceGrant], bool] = lambda grant: True,
) -> tuple[DeviceGrant, str] | None:
    """A live grant of this tenant to this device for the named bundle whose keys cover
    the request (all of them when it names none) and that `accept`s, with the bundle's
    name; else None."""
    if bundle is None and bundle_id is None:
        return None
    query = (
        select(DeviceGrant, Bundle.name)
        .join(Bundle, Bundle.id == DeviceGrant.bundle_id)
        .where(
            DeviceGrant.tenant_id == tenant_id,
            DeviceGrant.device_fingerprint == device,
            DeviceGrant.revoked_at.is_(None),
            Bundle.tenant_id == tenant_id,
        )
        .order_by(DeviceGrant.expires_at.desc())
    )
    query = query.where(Bundle.id == bundle_id) if bundle_id else query.where(Bundle.name == bundle)
    for grant, name in db.session.execute(query).all():
        if _is_active(grant) and set(template_keys) <= set(grant.keys) and accept(grant):
            return grant, name
    return None


def live(tenant_id: str, grant_id: str) -> DeviceGrant | None:
    """The grant while it is unrevoked and unexpired, else None."""
    grant = db.session.execute(
        select(DeviceGrant).where(DeviceGrant.id == grant_id, DeviceGrant.tenant_id == tenant_id)
    ).scalar_one_or_none()
    return grant if grant is not None and _is_active(grant) else None


def is_still_granted(tenant_id: str, grant_id: str, bundle_id: str, keys: Sequence[str]) -> bool:
    """True while the grant is unrevoked, unexpired and covers these keys of this bundle.

    The worker asks just before it seals: a grant revoked in between releases nothing.
    """
    grant = live(tenant_id, grant_id)
    return grant is not None and grant.bundle_id == bundle_id and set(keys) <= set(grant.keys)


def _email(user_id: str) -> str:
    return db.session.execute(select(User.email).where(User.id == user_id)).scalar() or user_id


def marker(tenant_id: str, grant_id: str) -> dict[str, Any]:
    """The envelope's `grant` marker: which grant, who made it, when it expires."""
    grant = db.session.execute(
        select(DeviceGrant).where(DeviceGrant.id == grant_id, DeviceGrant.tenant_id == tenant_id)
    ).scalar_one()
    return {
        "id": grant.id,
        "approved_by": _email(grant.approved_by),
        "expires_at": int(as_utc(grant.expires_at).timestamp()),
    }


def approver_email(grant: DeviceGrant) -> str:
    """The email of the approver who ticked the grant."""
    return _email(grant.approved_by)


def list_grants(tenant_id: str, bundle_id: str | None = None) -> GrantList:
    """The tenant's grants (of one bundle), newest first, active or not."""
    query = (
        select(DeviceGrant, Bundle.name)
        .join(Bundle, Bundle.id == DeviceGrant.bundle_id)
        .where(DeviceGrant.tenant_id == tenant_id)
        .order_by(DeviceGrant.created_at.desc())
        .limit(200)
    )
    if bundle_id is not None:
        query = query.where(DeviceGrant.bundle_id == bundle_id)
    rows = db.session.execute(query).all()
    emails = emails_of(g.approved_by for g, _ in rows)
    return GrantList(
        items=[
            GrantOut(
                id=grant.id,
                bundle_id=grant.bundle_id,
                bundle_name=name,
                device=grant.device_fingerprint,
                keys=list(grant.keys),
                approved_by=grant.approved_by,
                approved_by_email=emails.get(grant.approved_by, grant.approved_by),
                approvers=list(grant.approvers),
                created_at=as_utc(grant.created_at),
                expires_at=as_utc(grant.expires_at),
                revoked_at=as_utc(grant.revoked_at) if grant.revoked_at else None,
                is_active=_is_active(grant),
            )
            for grant, name in rows
        ]
    )


def revoke(actor: Actor, grant_id: str) -> None:
    """Revoke a grant at once (audited); the device's next request waits for a person."""
    with transaction():
        grant = db.session.execute(
            select(DeviceGrant).where(
                DeviceGrant.id == grant_id, DeviceGrant.tenant_id == actor.tenant_id
            )
        ).scalar_one_or_none()
        if grant is None:
            raise NotFound("No such grant.")
        already = grant.revoked_at is not None
        grant.revoked_at = grant.revoked_at or now()
        grant.revoked_by = grant.revoked_by or actor.user_id
        if not already:
            details = {"bundle_id": grant.bundle_id, "device": grant.device_fingerprint}
            actor.append("grant.revoked", f"grant:{grant_id}", details)
