"""Members of a workspace and invitations to join it (issue #17, local accounts).

Owners and admins invite by email with a role. The invitation token is shown
once (and emailed when SMTP is configured), stored as a SHA-256 hash, expires
after INVITE_TTL and is spent by one conditional UPDATE, so two accepts cannot
both win. The signed-in account that accepts must have the invited email
(case-insensitively): a forwarded or leaked link is useless to anyone else.
Under Clerk, Clerk is the source of truth and every write here is refused.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, func, select, update

from envcat.core.schemas.accounts import TenantOut
from envcat.core.schemas.team import (
    InviteAccepted,
    InviteCreate,
    InviteCreated,
    InviteList,
    InviteOut,
    MemberList,
    MemberOut,
    WorkspaceCreate,
)
from envcat.core.wire import WORKSPACE_SLUG_RULE, is_workspace_slug
from envcat.models import Invite, Membership, Tenant, User, db
from envcat.services import audit
from envcat.services.errors import (
    Conflict,
    EnvCatError,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.members")
ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}
TOKEN_PREFIX = "inv_"  # noqa: S105  # a prefix, not a secret
# The invitation email's token waits here, encrypted, until the notification task sends it.
INVITE_MAIL_TTL = 3600


class ManagedByClerk(Conflict):
    """AUTH_PROVIDER=clerk: members are managed in Clerk."""

    code = "managed_by_clerk"


class LastOwner(Conflict):
    """The workspace would be left without an owner."""

    code = "last_owner"


class InviteGone(EnvCatError):
    """The invitation was used, revoked or has expired."""

    status, code = 410, "invite_gone"


class WrongInvitee(Forbidden):
    """The invitation was made for another email address."""

    code = "wrong_invitee"


def hash_token(token: str) -> str:
    """SHA-256 hex of an invitation token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mail_key(invite_id: str) -> str:
    """Redis key of an invitation's encrypted token, waiting for the email task."""
    return f"invite:{invite_id}:mail"


def _require_local() -> None:
    if current().settings.auth_provider != "local":
        raise ManagedByClerk(
            "Members are managed in Clerk on this server; change them in your Clerk organisation."
        )


def _rank(role: str) -> int:
    return ROLE_RANK.get(role, -1)


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _now() -> datetime:
    return datetime.now(UTC)


# ---- workspaces ------------------------------------------------------------------------


def create_workspace(actor: Actor, body: WorkspaceCreate) -> TenantOut:
    """A new team workspace (kind org) with the caller as its owner; audited there."""
    _require_local()
    if body.slug is not None and not is_workspace_slug(body.slug):
        raise ValidationFailed(f"A workspace slug is {WORKSPACE_SLUG_RULE}.")
    tenant_id = f"ws_{secrets.token_hex(12)}"
    values: dict[str, str] = {"id": tenant_id, "name": body.name.strip() or tenant_id}
    if body.slug is not None:
        values["slug"] = body.slug
    with transaction("That slug is taken; choose another."):
        if (
            body.slug is not None
            and db.session.execute(select(Tenant.id).where(Tenant.slug == body.slug)).first()
        ):
            raise Conflict("That slug is taken; choose another.")
        tenant = Tenant(kind="org", **values)
        db.session.add(tenant)
        db.session.flush()
        db.session.add(Membership(user_id=actor.user_id, tenant_id=tenant_id, role="owner"))
        audit.append(tenant_id, actor.user_id, "workspace.created", tenant_id, origin=actor.origin)
    return TenantOut(id=tenant.id, name=tenant.name, kind="org", slug=tenant.slug)


# ---- members ---------------------------------------------------------------------------


def list_members(tenant_id: str) -> MemberList:
    """Every member of the workspace with email and role, owners first."""
    rows = db.session.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == tenant_id, User.deleted_at.is_(None))
        .order_by(User.email)
    ).all()
    members = [
        MemberOut(user_id=user.id, email=user.email, name=user.name, role=role)
        for user, role in rows
    ]
    members.sort(key=lambda m: -_rank(m.role))
    managed_by = "envcat" if current().settings.auth_provider == "local" else "clerk"
    return MemberList(members=members, managed_by=managed_by)


def _membership(tenant_id: str, user_id: str) -> Membership:
    found = db.session.get(Membership, (user_id, tenant_id))
    if found is None:
        raise NotFound("No such member.")
    return found


def _owner_count(tenant_id: str) -> int:
    return int(
        db.session.execute(
            select(func.count())
            .select_from(Membership)
            .where(Membership.tenant_id == tenant_id, Membership.role == "owner")
        ).scalar_one()
    )


def _may_manage(actor_role: str, target_role: str, new_role: str | None = None) -> None:
    """Admins manage members, viewers and admins; only owners touch owners or make them."""
    touches_owner = target_role == "owner" or new_role == "owner"
    if touches_owner and actor_role != "owner":
        raise Forbidden("Only an owner can change or remove an owner, or make one.")


def change_role(actor: Actor, actor_role: str, user_id: str, role: str) -> MemberOut:
    """Give a member another role (admin+); the last owner cannot be demoted (409)."""
    _require_local()
    membership = _membership(actor.tenant_id, user_id)
    previous = membership.role
    _may_manage(actor_role, previous, role)
    if previous == role:
        return _member_out(membership)
    with transaction():
        if previous == "owner" and _owner_count(actor.tenant_id) <= 1:
            raise LastOwner("The workspace needs an owner: make someone else owner first.")
        membership.role = role
        actor.append("member.role_changed", user_id, details={"from": previous, "to": role})
    return _member_out(membership)


def remove_member(actor: Actor, actor_role: str, user_id: str) -> None:
    """Remove a member (admin+, or anyone leaving); the last owner cannot go (409)."""
    _require_local()
    membership = _membership(actor.tenant_id, user_id)
    role = membership.role
    if user_id != actor.user_id:
        if _rank(actor_role) < _rank("admin"):
            raise Forbidden("This needs the admin role.")
        _may_manage(actor_role, role)
    with transaction():
        if role == "owner" and _owner_count(actor.tenant_id) <= 1:
            raise LastOwner("The workspace needs an owner: make someone else owner first.")
        db.session.delete(membership)
        actor.append("member.removed", user_id, details={"role": role})


def _member_out(membership: Membership) -> MemberOut:
    user = db.session.get(User, membership.user_id)
    assert user is not None  # noqa: S101  # the membership's foreign key
    return MemberOut(user_id=user.id, email=user.email, name=user.name, role=membership.role)


# ---- invitations -----------------------------------------------------------------------


def _status(invite: Invite, now: datetime) -> str:
    if invite.accepted_at is not None:
        return "accepted"
    if invite.revoked_at is not None:
        return "revoked"
    return "expired" if as_utc(invite.expires_at) <= now else "pending"


def _invite_out(invite: Invite, now: datetime) -> InviteOut:
    return InviteOut(
        id=invite.id,
        email=invite.email,
        role=invite.role,
        invited_by=invite.invited_by,
        created_at=as_utc(invite.created_at),
        expires_at=as_utc(invite.expires_at),
        status=_status(invite, now),
    )


@dataclass(frozen=True)
class NewInvite:
    """A created invitation; `mail_queued` when the caller should enqueue its email."""

    created: InviteCreated
    mail_queued: bool


def invite(actor: Actor, actor_role: str, body: InviteCreate) -> NewInvite:
    """Invite an email with a role (admin+; owners alone invite owners); audited.

    The token is returned here once. When SMTP is configured it is also left
    encrypted in Redis for the email task, which deletes it after sending.
    """
    _require_local()
    _may_manage(actor_role, "member", body.role)
    runtime = current()
    settings = runtime.settings
    already = db.session.execute(
        select(Membership.user_id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == actor.tenant_id, func.lower(User.email) == body.email)
    ).first()
    if already is not None:
        raise Conflict("That person is already a member of this workspace.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = _now()
    row = Invite(
        tenant_id=actor.tenant_id,
        email=body.email,
        role=body.role,
        token_hash=hash_token(token),
        invited_by=actor.user_id,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.invite_ttl),
    )
    with transaction():
        db.session.add(row)
        db.session.flush()  # the id the event names
        actor.append("member.invited", row.id, details={"email": row.email, "role": row.role})
    emailed = bool(settings.smtp_host)
    if emailed:
        sealed = runtime.keyring.encrypt(token, tenant_id=actor.tenant_id, key_id=row.id)
        runtime.redis.set(mail_key(row.id), sealed, ex=INVITE_MAIL_TTL)
    link = f"{settings.public_url.rstrip('/')}/invites/accept?token={token}"
    created = InviteCreated(
        **_invite_out(row, now).model_dump(), token=token, link=link, emailed=emailed
    )
    return NewInvite(created=created, mail_queued=emailed)


def forget_invite_mail(invite_id: str) -> None:
    """The email could not be queued: drop the waiting token (the link was shown anyway)."""
    current().redis.delete(mail_key(invite_id))


def list_invites(tenant_id: str) -> InviteList:
    """The workspace's invitations, newest first (never a token)."""
    now = _now()
    rows = db.session.execute(
        select(Invite).where(Invite.tenant_id == tenant_id).order_by(Invite.created_at.desc())
    ).scalars()
    return InviteList(invites=[_invite_out(row, now) for row in rows])


def revoke_invite(actor: Actor, invite_id: str) -> None:
    """Revoke a pending invitation (admin+); audited. Used or revoked ones are 409."""
    _require_local()
    with transaction():
        done = db.session.execute(
            update(Invite)
            .where(
                Invite.id == invite_id,
                Invite.tenant_id == actor.tenant_id,
                Invite.accepted_at.is_(None),
                Invite.revoked_at.is_(None),
            )
            .values(revoked_at=_now())
            .execution_options(synchronize_session=False)
        )
        if not _rowcount(done):
            if db.session.execute(
                select(Invite.id).where(Invite.id == invite_id, Invite.tenant_id == actor.tenant_id)
            ).first():
                raise Conflict("This invitation was already used or revoked.")
            raise NotFound("No such invitation.")
        actor.append("invite.revoked", invite_id)
    current().redis.delete(mail_key(invite_id))


def accept(user_id: str, token: str, origin: audit.Origin) -> InviteAccepted:
    """Spend an invitation for the signed-in local user; their email must be the invited one.

    404 for an unknown token, 410 when used, revoked or expired, 403 wrong_invitee for
    another account, 409 when already a member. One conditional UPDATE spends it.
    """
    _require_local()
    row = db.session.execute(
        select(Invite).where(Invite.token_hash == hash_token(token))
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("This invitation link is not valid.")
    now = _now()
    if _status(row, now) != "pending":
        raise InviteGone("This invitation was already used, revoked, or has expired.")
    user = db.session.get(User, user_id)
    if user is None or user.is_deleted or user.email.lower() != row.email.lower():
        raise WrongInvitee(
            "This invitation is for another email address; sign in with that account."
        )
    if db.session.get(Membership, (user_id, row.tenant_id)) is not None:
        raise Conflict("You are already a member of this workspace.")
    tenant_id, role, invite_id = row.tenant_id, row.role, row.id
    with transaction("You are already a member of this workspace."):
        spent = db.session.execute(
            update(Invite)
            .where(
                Invite.id == invite_id,
                Invite.accepted_at.is_(None),
                Invite.revoked_at.is_(None),
                Invite.expires_at > now,
            )
            .values(accepted_at=now, accepted_by=user_id)
            .execution_options(synchronize_session=False)
        )
        if not _rowcount(spent):
            raise InviteGone("This invitation was already used, revoked, or has expired.")
        db.session.add(Membership(user_id=user_id, tenant_id=tenant_id, role=role))
        audit.append(
            tenant_id,
            user_id,
            "member.joined",
            user_id,
            details={"invite_id": invite_id, "role": role},
            origin=origin,
        )
    tenant = db.session.get(Tenant, tenant_id)
    assert tenant is not None  # noqa: S101  # the invite's foreign key
    return InviteAccepted(
        tenant=TenantOut(id=tenant.id, name=tenant.name, kind=tenant.kind, slug=tenant.slug),
        role=role,
    )


def lead_emails(tenant_id: str) -> list[str]:
    """Emails of the workspace's owners and admins (live accounts), sorted: who hears of a
    break-glass release or a leaked secret."""
    rows = db.session.execute(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.tenant_id == tenant_id,
            Membership.role.in_(("owner", "admin")),
            User.deleted_at.is_(None),
        )
        .order_by(User.email)
    ).scalars()
    return list(rows)
