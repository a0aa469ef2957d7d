"""Built-in accounts (AUTH_PROVIDER=local): argon2id password hashes, sign-up, sign-in,
password change and account deletion.

A local user gets a personal tenant with the same id, named after the email,
where the user is owner. Emails are stored and matched in lower case. Sign-in
costs one argon2 verification whether or not the email exists, and sign-up one
argon2 hash whether or not the email is taken, so response times do not reveal
which emails have accounts.
"""

from __future__ import annotations

import functools
import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import ValidationError
from sqlalchemy import delete, func, select, update

from envcat.core.schemas.accounts import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    AccountDeleted,
    AccountOut,
    PasswordChanged,
    SignUp,
    normalise_email,
)
from envcat.models import Bundle, Key, Membership, Tenant, User, db, utcnow
from envcat.services import audit
from envcat.services.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from envcat.services.runtime import current
from envcat.services.tenancy import account
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.accounts")
# argon2id with OWASP's first recommended profile (19 MiB, t=2, p=1): about 0.1 s of one
# core. argon2-cffi's default (64 MiB, t=3, p=4) costs ~0.8 s of a loaded 2-core host, and
# under gunicorn's gevent worker a hash blocks every long poll of that worker meanwhile.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
EMAIL_TAKEN = "An account with this email already exists."


class SignupDisabled(Forbidden):
    """ALLOW_SIGNUP is false."""

    code = "signup_disabled"


class InvalidCredentials(Unauthorized):
    """Wrong password or unknown email (never says which)."""

    code = "invalid_credentials"


@functools.cache
def _dummy_hash() -> str:
    # Same parameters as real hashes, so verifying against it costs the same.
    return HASHER.hash(secrets.token_urlsafe(16))


def _require_local_provider() -> None:
    if current().settings.auth_provider != "local":
        raise NotFound("Local accounts are not enabled (AUTH_PROVIDER is not local).")


def _validated(email: str, password: str) -> SignUp:
    try:
        return SignUp.model_validate({"email": email, "password": password})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        fields = {str(e["loc"][0]): e["type"] for e in errors if e["loc"]}
        problems = []
        if "email" in fields:
            problems.append("Enter a valid email address, like name@example.com.")
        if fields.get("password") == "string_too_long":
            problems.append(f"Use a password of at most {MAX_PASSWORD} characters.")
        elif "password" in fields:
            problems.append(f"Use a password of at least {MIN_PASSWORD} characters.")
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        raise ValidationFailed(" ".join(problems), details=details) from None


def _email_taken(email: str) -> bool:
    statement = select(User.id).where(func.lower(User.email) == email).limit(1)
    return db.session.execute(statement).first() is not None


def create_local_user(email: str, password: str) -> tuple[User, Tenant]:
    """Create a user with an argon2id hash, a personal tenant and the owner membership.

    One transaction. Raises ValidationFailed (malformed email, password under 10
    characters) or Conflict (email taken, compared case-insensitively).
    """
    data = _validated(email, password)
    # Hash first, taken or not: the answer's timing must not say whether the email exists.
    password_hash = HASHER.hash(data.password)  # before the transaction: it is slow
    if _email_taken(data.email):
        raise Conflict(EMAIL_TAKEN)
    user_id = f"usr_{secrets.token_hex(12)}"
    user = User(id=user_id, email=data.email, name=None, password_hash=password_hash)
    tenant = Tenant(id=user_id, name=data.email, kind="personal")
    with transaction(EMAIL_TAKEN):
        db.session.add_all([user, tenant, Membership(user=user, tenant=tenant, role="owner")])
    log.info("local user created", extra={"user_id": user.id})
    return user, tenant


def sign_up(email: str, password: str) -> AccountOut:
    """Open sign-up (ALLOW_SIGNUP): create the account and return it with its personal tenant."""
    _require_local_provider()
    if not current().settings.allow_signup:
        raise SignupDisabled("Sign-up is disabled on this server; ask an administrator.")
    user, tenant = create_local_user(email, password)
    return account(user.id, tenant.id)


def _home_tenant(user: User) -> str:
    tenant_ids = list(
        db.session.execute(
            select(Membership.tenant_id)
            .where(Membership.user_id == user.id)
            .order_by(Membership.tenant_id)
        ).scalars()
    )
    if not tenant_ids:
        raise Forbidden("This account belongs to no workspace.")
    return user.id if user.id in tenant_ids else tenant_ids[0]


def authenticate(email: str, password: str) -> AccountOut:
    """Check an email and password; return the account in its personal tenant, else 401."""
    _require_local_provider()
    user = db.session.execute(
        select(User)
        .where(func.lower(User.email) == normalise_email(email), User.password_hash.is_not(None))
        .limit(1)
    ).scalar_one_or_none()
    stored = user.password_hash if user is not None and not user.is_deleted else None
    try:
        HASHER.verify(stored or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        raise InvalidCredentials("Wrong email or password.") from None
    if user is None or stored is None:
        raise InvalidCredentials("Wrong email or password.")
    if HASHER.check_needs_rehash(stored):
        user.password_hash = HASHER.hash(password)
        db.session.commit()
    return account(user.id, _home_tenant(user))


# ---------------------------------------------------------------- account settings


def _password_rules(password: str) -> str:
    """The new password if it follows the sign-up rules, else ValidationFailed saying which."""
    try:
        return SignUp.model_validate({"email": "x@example.com", "password": password}).password
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        kind = errors[0]["type"] if errors else ""
        limit = (
            f"at most {MAX_PASSWORD}" if kind == "string_too_long" else f"at least {MIN_PASSWORD}"
        )
        details = [{"loc": ["new_password"], "msg": e["msg"], "type": e["type"]} for e in errors]
        raise ValidationFailed(f"Use a password of {limit} characters.", details=details) from None


def _verified_user(user_id: str, password: str) -> User:
    """The live local user whose password this is, else InvalidCredentials (one argon2 check)."""
    user = db.session.get(User, user_id)
    stored = user.password_hash if user is not None and not user.is_deleted else None
    try:
        HASHER.verify(stored or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        raise InvalidCredentials("The current password is wrong.") from None
    if user is None or stored is None:
        raise InvalidCredentials("The current password is wrong.")
    return user


def change_password(
    user_id: str, old_password: str, new_password: str, origin: audit.Origin
) -> PasswordChanged:
    """Replace a local user's password after checking the current one; audited."""
    _require_local_provider()
    new_password = _password_rules(new_password)
    user = _verified_user(user_id, old_password)
    new_hash = HASHER.hash(new_password)
    with transaction():
        user.password_hash = new_hash
        audit.append(user.id, user.id, "account.password_changed", user.id, origin=origin)
    log.info("password changed", extra={"user_id": user.id})
    return PasswordChanged(user_id=user.id)


class LastOwner(Conflict):
    """The user is the only owner of a workspace that has other members."""

    code = "last_owner"


def _memberships(user_id: str) -> list[tuple[str, str, int, int]]:
    """(tenant id, role, other members, other owners) for each of the user's workspaces."""
    others = (
        select(
            Membership.tenant_id,
            func.count().label("members"),
            func.count().filter(Membership.role == "owner").label("owners"),
        )
        .where(Membership.user_id != user_id)
        .group_by(Membership.tenant_id)
        .subquery()
    )
    rows = db.session.execute(
        select(
            Membership.tenant_id,
            Membership.role,
            func.coalesce(others.c.members, 0),
            func.coalesce(others.c.owners, 0),
        )
        .outerjoin(others, others.c.tenant_id == Membership.tenant_id)
        .where(Membership.user_id == user_id)
        .order_by(Membership.tenant_id)
    ).all()
    return [(str(t), str(r), int(m), int(o)) for t, r, m, o in rows]


def _retire_tenant(tenant_id: str) -> None:
    """Mark the workspace deleted and purge its bundles, keys and memberships (audit stays)."""
    db.session.execute(update(Tenant).where(Tenant.id == tenant_id).values(deleted_at=utcnow()))
    db.session.execute(delete(Bundle).where(Bundle.tenant_id == tenant_id))
    db.session.execute(delete(Key).where(Key.tenant_id == tenant_id))
    db.session.execute(delete(Membership).where(Membership.tenant_id == tenant_id))


def delete_account(user_id: str, password: str, origin: audit.Origin) -> AccountDeleted:
    """Delete a local account after checking its password; audited in each of its workspaces.

    Refused (409 last_owner) while the user is the only owner of a workspace that
    has other members. A workspace the user is the only member of (always the
    personal one) is deleted with its bundles and keys. The user row is scrubbed
    and kept, so audit entries still name an id that can never sign in again.
    """
    _require_local_provider()
    user = _verified_user(user_id, password)
    memberships = _memberships(user.id)
    blocking = [
        t for t, role, members, owners in memberships if role == "owner" and members and not owners
    ]
    if blocking:
        names = ", ".join(
            sorted(db.session.execute(select(Tenant.name).where(Tenant.id.in_(blocking))).scalars())
        )
        raise LastOwner(
            f"You are the only owner of {names}, which has other members. "
            "Make another member an owner, or remove the members, first."
        )
    retired = [t for t, _, members, _ in memberships if not members]
    with transaction():
        for tenant_id in retired:
            _retire_tenant(tenant_id)
        db.session.execute(delete(Membership).where(Membership.user_id == user.id))
        user.deleted_at = utcnow()
        user.email = f"{user.id}@deleted.invalid"
        user.name = None
        user.password_hash = None
        # one chain lock per workspace, always taken in the same order (no deadlock)
        for tenant_id in sorted(t for t, _, _, _ in memberships):
            details = {"workspace_deleted": tenant_id in retired}
            audit.append(
                tenant_id, user.id, "account.deleted", user.id, details=details, origin=origin
            )
    for tenant_id in retired:  # after the commit: a lookup meanwhile saw the live row
        current().slugs.forget_tenant(tenant_id)
    log.info("local account deleted", extra={"user_id": user.id, "tenants": len(retired)})
    return AccountDeleted(user_id=user.id, deleted_tenants=retired)
