"""Tenant-scoped lookups shared by the bundle, key, audit and /me services.

Every read of tenant data goes through a function here that filters by the
tenant taken from the verified signature; an object of another tenant is
indistinguishable from one that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from envcat.core.schemas.accounts import AccountOut, TenantOut, UserOut
from envcat.models import AuditEvent, Bundle, Key, Membership, Tenant, User, db
from envcat.services import audit
from envcat.services.errors import NotFound


@dataclass(frozen=True)
class Actor:
    """Who acts, in which tenant, and from where (ip and user agent for the audit log)."""

    tenant_id: str
    user_id: str
    origin: audit.Origin = field(default_factory=audit.Origin)

    def append(self, action: str, target: str, details: dict[str, Any] | None = None) -> AuditEvent:
        """Append an audit event for this actor to the current `transaction()` (audit.append).
        `details` holds names and ids, never values."""
        return audit.append(
            self.tenant_id, self.user_id, action, target, details=details, origin=self.origin
        )


def as_utc(at: datetime) -> datetime:
    """Return an aware UTC datetime (SQLite hands back naive ones)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def get_bundle(tenant_id: str, bundle_id: str) -> Bundle:
    """Return the tenant's bundle, or raise NotFound (also for another tenant's id)."""
    bundle = db.session.execute(
        select(Bundle).where(Bundle.id == bundle_id, Bundle.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if bundle is None:
        raise NotFound("No such bundle.")
    return bundle


def get_key(tenant_id: str, key_id: str) -> Key:
    """Return the tenant's library key, or raise NotFound (also for another tenant's id)."""
    key = db.session.execute(
        select(Key).where(Key.id == key_id, Key.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if key is None:
        raise NotFound("No such key.")
    return key


def account(user_id: str, tenant_id: str) -> AccountOut:
    """The user, the tenant and the user's role there (GET /me, sign-in replies)."""
    row = db.session.execute(
        select(User, Tenant, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .join(Tenant, Tenant.id == Membership.tenant_id)
        .where(User.id == user_id, Tenant.id == tenant_id)
    ).one_or_none()
    if row is None:
        raise NotFound("Not found.")
    user, tenant, role = row
    return AccountOut(
        user=UserOut(id=user.id, email=user.email, name=user.name),
        tenant=TenantOut(id=tenant.id, name=tenant.name, kind=tenant.kind, slug=tenant.slug),
        role=role,
    )


def emails_of(user_ids: Iterable[str]) -> dict[str, str]:
    """Each known user id's email (one query; unknown ids are simply absent)."""
    wanted = {user_id for user_id in user_ids if user_id}
    if not wanted:
        return {}
    rows = db.session.execute(select(User.id, User.email).where(User.id.in_(wanted))).all()
    return {user_id: email for user_id, email in rows}
