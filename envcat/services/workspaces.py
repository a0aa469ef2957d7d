"""Workspaces (tenants) by slug: what the CLI names, resolved once when a request is made."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from envcat.core.schemas.accounts import TenantOut
from envcat.core.wire import WORKSPACE_SLUG_RULE, is_workspace_slug
from envcat.models import Membership, Tenant, db
from envcat.services.errors import Conflict, UnknownWorkspace, ValidationFailed
from envcat.services.runtime import current
from envcat.services.tenancy import Actor
from envcat.services.transactions import transaction


@dataclass(frozen=True)
class Workspace:
    """A live tenant as a request names it."""

    id: str
    slug: str


def resolve(slug: str) -> Workspace:
    """Return the live workspace with this slug, or raise UnknownWorkspace (404).

    Remembered for a few seconds per process (`envcat.services.slug_cache`): every
    request creation names its workspace.
    """
    slugs = current().slugs
    if (tenant_id := slugs.get(slug)) is not None:
        return Workspace(id=tenant_id, slug=slug)
    row = db.session.execute(
        select(Tenant.id, Tenant.slug).where(Tenant.slug == slug, Tenant.deleted_at.is_(None))
    ).one_or_none()
    if row is None:
        raise UnknownWorkspace(
            f"There is no workspace {slug!r} on this server; check -w / ENVCAT_WORKSPACE."
        )
    slugs.put(row.slug, row.id)
    return Workspace(id=row.id, slug=row.slug)


def slug_of(tenant_id: str) -> str:
    """The slug of a tenant (for envelopes and pages); "" when the tenant is gone."""
    slug = db.session.execute(select(Tenant.slug).where(Tenant.id == tenant_id)).scalar()
    return slug or ""


def memberships(user_id: str) -> list[TenantOut]:
    """Every live workspace the user belongs to, by name (the workspace switcher)."""
    rows = db.session.execute(
        select(Tenant)
        .join(Membership, Membership.tenant_id == Tenant.id)
        .where(Membership.user_id == user_id, Tenant.deleted_at.is_(None))
        .order_by(Tenant.name, Tenant.id)
    ).scalars()
    return [_out(tenant) for tenant in rows]


def rename(actor: Actor, slug: str) -> TenantOut:
    """Change the workspace's slug (owner only, checked by the caller); 409 when taken."""
    if not is_workspace_slug(slug):
        raise ValidationFailed(f"A workspace slug is {WORKSPACE_SLUG_RULE}.")
    tenant = db.session.get(Tenant, actor.tenant_id)
    if tenant is None:
        raise UnknownWorkspace("No such workspace.")
    previous = tenant.slug
    if previous == slug:
        return _out(tenant)
    with transaction("That slug is taken; choose another."):
        if db.session.execute(select(Tenant.id).where(Tenant.slug == slug)).first() is not None:
            raise Conflict("That slug is taken; choose another.")
        tenant.slug = slug
        actor.append("workspace.renamed", tenant.id, details={"from": previous, "to": slug})
    current().slugs.forget(previous, slug)  # after the commit: a lookup meanwhile saw the old
    return _out(tenant)


def _out(tenant: Tenant) -> TenantOut:
    return TenantOut.model_validate(
        {"id": tenant.id, "name": tenant.name, "kind": tenant.kind, "slug": tenant.slug}
    )
