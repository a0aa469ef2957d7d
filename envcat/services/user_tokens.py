"""User tokens (issues #16, #17): a person's short-lived bearer token for one terminal.

`envcat login` gets one when a member of the workspace approves "sign in this
terminal" (`envcat.services.access_requests.login`). A token is `ecu_<prefix>_<secret>`, stored
like a service token (prefix + SHA-256, `service_tokens.hash_token`); it lives
USER_TOKEN_HOURS, is listed and revocable on the account page, and `envcat logout`
revokes it. Through the bff it acts as its person in its one workspace; on request
creation it names the requester. A token that is unknown, revoked, expired, of a
removed member or of another workspace gets the same 401.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from envcat.core.schemas.logins import USER_TOKEN_SCHEME, UserTokenList, UserTokenOut, WhoAmI
from envcat.models import Membership, Tenant, User, UserToken, db, utcnow
from envcat.services import audit, service_tokens
from envcat.services.errors import EnvCatError, NotFound
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc
from envcat.services.transactions import transaction

TOKEN_RE = re.compile(rf"{USER_TOKEN_SCHEME}_([0-9a-f]{{12}})_[A-Za-z0-9_-]{{43}}")
LAST_USED_PRECISION = timedelta(minutes=1)
REFUSED = "The sign-in is unknown, revoked, expired or not for this workspace; run envcat login."


class InvalidUserToken(EnvCatError):
    """A user token that is unknown, revoked, expired, or not for this workspace."""

    status, code = 401, "invalid_user_token"


@dataclass(frozen=True)
class SignedIn:
    """The person a valid user token speaks for."""

    token_id: str
    user_id: str
    email: str
    tenant_id: str
    workspace: str
    role: str
    expires_at: datetime


def issue(tenant_id: str, user_id: str, name: str) -> tuple[str, UserToken]:
    """Store a new token for this person and workspace; the token is returned here only."""
    token, prefix = service_tokens.mint(USER_TOKEN_SCHEME)
    hours = current().settings.user_token_hours
    with transaction("Could not make a unique token; retry."):
        row = UserToken(
            tenant_id=tenant_id,
            user_id=user_id,
            name=name[:200] or "terminal",
            prefix=prefix,
            token_hash=service_tokens.hash_token(token),
            expires_at=utcnow() + timedelta(hours=hours),
        )
        db.session.add(row)
    return token, row


def discard(token_id: str) -> None:
    """Delete a token nobody received (its sign-in could not be delivered), in the caller's
    transaction."""
    db.session.execute(delete(UserToken).where(UserToken.id == token_id))


def resolve(token: str, tenant_id: str | None = None) -> SignedIn:
    """Who `token` speaks for (stamps its last use); InvalidUserToken (401) otherwise."""
    match = TOKEN_RE.fullmatch(token)
    if match is None:
        raise InvalidUserToken(REFUSED)
    found = db.session.execute(
        select(UserToken, User.email, User.deleted_at, Membership.role, Tenant.slug)
        .join(User, User.id == UserToken.user_id)
        .join(Tenant, Tenant.id == UserToken.tenant_id)
        .outerjoin(
            Membership,
            (Membership.user_id == UserToken.user_id)
            & (Membership.tenant_id == UserToken.tenant_id),
        )
        .where(UserToken.prefix == match.group(1))
    ).one_or_none()
    if found is None or not service_tokens.matches(found[0].token_hash, token):
        raise InvalidUserToken(REFUSED)
    row, email, deleted_at, role, slug = found
    if role is None or deleted_at is not None or row.revoked_at is not None:
        raise InvalidUserToken(REFUSED)  # a removed member's terminals stop at once
    if as_utc(row.expires_at) <= utcnow() or (tenant_id is not None and row.tenant_id != tenant_id):
        raise InvalidUserToken(REFUSED)
    now = utcnow()
    if row.last_used_at is None or now - as_utc(row.last_used_at) > LAST_USED_PRECISION:
        row.last_used_at = now  # a write per minute at most, not one per proxied call
        db.session.commit()
    return SignedIn(row.id, row.user_id, email or "", row.tenant_id, slug, role, row.expires_at)


def whoami(token: str) -> WhoAmI:
    """GET /logins/whoami: the token's person, workspace and expiry."""
    who = resolve(token)
    return WhoAmI(
        user_id=who.user_id,
        email=who.email,
        tenant_id=who.tenant_id,
        workspace=who.workspace,
        role=who.role,
        token_id=who.token_id,
        expires_at=as_utc(who.expires_at),
    )


def _revoke(row: UserToken, actor: Actor) -> None:
    if row.revoked_at is not None:
        return  # revoking twice is harmless
    with transaction():
        row.revoked_at = utcnow()
        actor.append(
            "user_token.revoked", f"user_token:{row.id}", {"name": row.name, "prefix": row.prefix}
        )


def log_out(token: str, origin: audit.Origin) -> None:
    """Revoke the token presented (`envcat logout`), audited as its person."""
    who = resolve(token)
    row = db.session.get(UserToken, who.token_id)
    assert row is not None  # noqa: S101  # resolve just read it
    _revoke(row, Actor(who.tenant_id, who.user_id, origin))


def list_tokens(tenant_id: str, user_id: str) -> UserTokenList:
    """The caller's signed-in terminals in this workspace, newest first."""
    slug = db.session.execute(select(Tenant.slug).where(Tenant.id == tenant_id)).scalar_one()
    rows = db.session.scalars(
        select(UserToken)
        .where(UserToken.tenant_id == tenant_id, UserToken.user_id == user_id)
        .order_by(UserToken.created_at.desc())
    ).all()
    return UserTokenList(
        items=[
            UserTokenOut(
                id=row.id,
                name=row.name,
                prefix=row.prefix,
                workspace=slug,
                created_at=as_utc(row.created_at),
                expires_at=as_utc(row.expires_at),
                last_used_at=as_utc(row.last_used_at) if row.last_used_at else None,
                revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
            )
            for row in rows
        ]
    )


def revoke(actor: Actor, token_id: str) -> None:
    """Revoke one of the caller's own terminals (audited); another's is NotFound."""
    with transaction():
        row = db.session.execute(
            select(UserToken).where(
                UserToken.id == token_id,
                UserToken.tenant_id == actor.tenant_id,
                UserToken.user_id == actor.user_id,
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("No such signed-in terminal.")
        _revoke(row, actor)
