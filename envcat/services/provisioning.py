"""Clerk → EnvCat provisioning: webhook intake, applying events, and first-sign-in JIT.

Views and the task call these functions; nothing here reads `flask.request` or
touches Celery. Every write is an upsert by Clerk id that is safe to run twice
or concurrently (INSERT … ON CONFLICT DO NOTHING, then a conditional UPDATE),
and every row remembers Clerk's `updated_at` so a late event cannot undo a newer
one. Logs carry ids only, never emails or names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import ColumnElement, CursorResult, Table, delete, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute
from standardwebhooks.webhooks import EmptyWebhookSecretError
from svix.webhooks import Webhook, WebhookVerificationError

from envcat.core.schemas.accounts import AccountOut
from envcat.core.schemas.clerk import (
    EVENT_MODELS,
    ClerkDeletedObject,
    ClerkEnvelope,
    ClerkJitRequest,
    ClerkMembership,
    ClerkOrganization,
    ClerkUser,
    display_name,
    valid_email,
)
from envcat.core.wire import is_workspace_slug
from envcat.models import (
    Base,
    Bundle,
    Key,
    Membership,
    MembershipRemoval,
    Tenant,
    User,
    WebhookEvent,
    db,
    utcnow,
)
from envcat.services import integrity, tenancy
from envcat.services.errors import EnvCatError, NotFound, Unavailable, ValidationFailed

log = logging.getLogger("envcat.provisioning")

SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
MAX_EVENT_ID = 128
MAX_NAME = 200
# Clerk's two built-in organisation roles; any custom role gets the least privilege.
ROLE_MAP = {"org:admin": "admin", "org:member": "member"}
LEAST_PRIVILEGE = "viewer"
# users.email is NOT NULL and UNIQUE: a user Clerk has not described yet (or whose address
# another row holds, or who was deleted) gets an address that can never be delivered (RFC 2606).
PLACEHOLDER_DOMAIN = "clerk.invalid"
# A stored, unprocessed delivery older than this is re-enqueued when Svix retries it.
STALE_DELIVERY = timedelta(minutes=2)


class InvalidSignature(EnvCatError):
    status, code = 401, "invalid_signature"


class AccountDeleted(EnvCatError):
    status, code = 401, "account_deleted"


@dataclass(frozen=True)
class ClerkEvent:
    """A verified delivery: the svix-id, the event type and its parsed data."""

    id: str
    type: str
    data: BaseModel

    def payload(self) -> dict[str, Any]:
        """The data as JSON for the task: only the fields EnvCat uses."""
        return self.data.model_dump(mode="json")


def map_role(clerk_role: str | None) -> str:
    """`org:admin` → admin, `org:member` → member, anything else → viewer."""
    return ROLE_MAP.get(clerk_role or "", LEAST_PRIVILEGE)


def placeholder_email(user_id: str) -> str:
    """The undeliverable, unique address of a user whose real one is unknown or withheld."""
    return f"{user_id}@{PLACEHOLDER_DOMAIN}"


# ---------------------------------------------------------------- webhook intake


def verify_event(secret: str | None, raw: bytes, headers: Mapping[str, str]) -> ClerkEvent | None:
    """Check the Svix signature over the raw body, then parse it; None for a type we ignore."""
    if not secret:
        raise Unavailable("CLERK_WEBHOOK_SECRET is not set: Clerk webhooks cannot be verified.")
    try:
        verifier = Webhook(secret)
    except (EmptyWebhookSecretError, ValueError, RuntimeError):
        raise Unavailable("CLERK_WEBHOOK_SECRET is not a valid whsec_ secret.") from None
    lowered = {name.lower(): value for name, value in headers.items()}
    wanted = {name: lowered.get(name, "") for name in SVIX_HEADERS}
    try:
        verifier.verify(raw, wanted)
    except (WebhookVerificationError, ValueError):  # ValueError: non-UTF-8 body, garbled header
        raise InvalidSignature("The Svix signature is missing, wrong or too old.") from None
    envelope = ClerkEnvelope.model_validate_json(raw)
    model = EVENT_MODELS.get(envelope.type)
    if model is None:
        return None
    if len(wanted["svix-id"]) > MAX_EVENT_ID:
        raise ValidationFailed("The svix-id header is too long.")
    return ClerkEvent(wanted["svix-id"], envelope.type, model.model_validate(envelope.data))


def record_delivery(event: ClerkEvent) -> bool:
    """Store the svix-id and commit; True when the caller should enqueue the event.

    False for a twin or a redelivery of an event that was processed or is still
    fresh. A redelivery of one stored long ago and never processed (the api died
    between commit and enqueue, or the message was lost) is claimed again, so
    Svix's retry repairs the gap; the task is idempotent by event id.
    """
    db.session.add(WebhookEvent(id=event.id, type=event.type))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return _reclaim_stale_delivery(event.id)
    return True


def _reclaim_stale_delivery(event_id: str) -> bool:
    now = utcnow()
    claimed = db.session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.id == event_id,
            WebhookEvent.processed_at.is_(None),
            WebhookEvent.received_at < now - STALE_DELIVERY,
        )
        .values(received_at=now)
    )
    db.session.commit()
    return cast(CursorResult[Any], claimed).rowcount == 1


def forget_delivery(event_id: str) -> None:
    """Drop an unprocessed delivery, so Svix's retry is not mistaken for a duplicate."""
    db.session.execute(
        delete(WebhookEvent).where(WebhookEvent.id == event_id, WebhookEvent.processed_at.is_(None))
    )
    db.session.commit()


# ---------------------------------------------------------------- applying events


def apply_event(event_id: str, event_type: str, data: Mapping[str, Any], mac: str) -> bool:
    """Apply a recorded event exactly once and commit; False when already applied, unknown,
    or when its data is not what the api verified (the MAC the message carries)."""
    model = EVENT_MODELS.get(event_type)
    if model is None:
        raise ValueError(f"{event_type!r} is not a provisioning event")
    if not integrity.is_event_intact(event_id, event_type, data, mac):
        # a broker writer's message: refused without a retry, logged by id only
        log.warning("provisioning message fails its integrity check", extra={"event": event_id})
        return False
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        # Name the fields only: pydantic's own message quotes the input (emails, names).
        fields = sorted({".".join(map(str, e["loc"])) for e in exc.errors(include_input=False)})
        raise ValueError(f"malformed {event_type} data: {', '.join(fields)}") from None
    # The claim and the changes commit together: a concurrent or repeated run finds it taken.
    claimed = _rowcount(
        db.session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id, WebhookEvent.processed_at.is_(None))
            .values(processed_at=utcnow())
        )
    )
    if not claimed:
        db.session.rollback()
        return False
    _dispatch(event_type, parsed)
    db.session.commit()
    return True


def _dispatch(event_type: str, data: BaseModel) -> None:
    match data:
        case ClerkUser():
            _apply_user(data)
        case ClerkDeletedObject() if event_type == "user.deleted":
            _delete_user(data.id)
        case ClerkDeletedObject():
            _retire_tenant(data.id, "org")
        case ClerkOrganization():
            _apply_org(data)
        case ClerkMembership() if event_type == "organizationMembership.deleted":
            _remove_membership(data)
        case ClerkMembership():
            _apply_membership(data)


def _apply_user(user: ClerkUser) -> None:
    name = _clip(user.name())
    email = _free_email(user.id, user.primary_email())
    values: dict[str, Any] = {"name": name, "source_updated_at": user.updated_at}
    if not _insert_user(user.id, email, **values):
        applied = db.session.execute(
            update(User)
            .where(
                User.id == user.id,
                User.deleted_at.is_(None),
                _not_newer(User.source_updated_at, user.updated_at),
            )
            .values(**values, **({"email": email} if email else {}))
        )
        if not _rowcount(applied):
            log.info("clerk user event is stale or the user is deleted", extra={"user": user.id})
            return
    _ensure_personal_tenant(user.id, name or email or user.id, rename=True)


def _delete_user(user_id: str) -> None:
    """Soft-delete: scrub the row, drop every membership, retire the personal tenant."""
    scrub: dict[str, Any] = {
        "email": placeholder_email(user_id),
        "name": None,
        "password_hash": None,
    }
    if not _insert_ignore(User, id=user_id, deleted_at=utcnow(), **scrub):
        db.session.execute(
            update(User)
            .where(User.id == user_id, User.deleted_at.is_(None))
            .values(deleted_at=utcnow(), **scrub)
        )
    db.session.execute(delete(Membership).where(Membership.user_id == user_id))
    _retire_tenant(user_id, "personal")


def _clerk_slug(org: ClerkOrganization) -> dict[str, str]:
    """Clerk's slug for a new org's workspace when valid and free; else made from its name."""
    slug = org.slug or ""
    if not is_workspace_slug(slug):
        return {}
    if db.session.execute(select(Tenant.id).where(Tenant.slug == slug)).first() is not None:
        return {}
    return {"slug": slug}


def _apply_org(org: ClerkOrganization) -> None:
    name = _clip(org.name) or org.id
    values: dict[str, Any] = {"name": name, "source_updated_at": org.updated_at}
    if _insert_org(org.id, _clerk_slug(org), **values):
        return
    applied = db.session.execute(
        update(Tenant)
        .where(
            Tenant.id == org.id,
            Tenant.kind == "org",
            Tenant.deleted_at.is_(None),
            _not_newer(Tenant.source_updated_at, org.updated_at),
        )
        .values(**values)
    )
    if not _rowcount(applied):
        log.info("clerk organization event is stale or deleted", extra={"tenant": org.id})


def _retire_tenant(tenant_id: str, kind: str) -> None:
    """Mark the tenant deleted and purge its bundles, keys and memberships (audit stays)."""
    if not _insert_ignore(Tenant, id=tenant_id, name=tenant_id, kind=kind, deleted_at=utcnow()):
        db.session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id, Tenant.deleted_at.is_(None))
            .values(deleted_at=utcnow())
        )
    # bundle_keys rows go with their bundles and keys (ON DELETE CASCADE).
    db.session.execute(delete(Bundle).where(Bundle.tenant_id == tenant_id))
    db.session.execute(delete(Key).where(Key.tenant_id == tenant_id))
    db.session.execute(delete(Membership).where(Membership.tenant_id == tenant_id))


def _apply_membership(member: ClerkMembership) -> None:
    user_id, org_id = member.public_user_data.user_id, member.organization.id
    _apply_org(member.organization)
    name = _clip(
        display_name(member.public_user_data.first_name, member.public_user_data.last_name)
    )
    if not _ensure_user(user_id, name) or not _is_live_org(org_id):
        log.info(
            "clerk membership of a deleted user or org", extra={"user": user_id, "tenant": org_id}
        )
        return
    if _removed_since(user_id, org_id, member.updated_at):
        log.info(
            "clerk membership event predates its removal", extra={"user": user_id, "tenant": org_id}
        )
        return
    values: dict[str, Any] = {"role": map_role(member.role), "source_updated_at": member.updated_at}
    if not _insert_ignore(Membership, user_id=user_id, tenant_id=org_id, **values):
        applied = db.session.execute(
            update(Membership)
            .where(
                Membership.user_id == user_id,
                Membership.tenant_id == org_id,
                _not_newer(Membership.source_updated_at, member.updated_at),
            )
            .values(**values)
        )
        if not _rowcount(applied):
            log.info("clerk membership event is stale", extra={"user": user_id, "tenant": org_id})
            return
    db.session.execute(
        delete(MembershipRemoval).where(
            MembershipRemoval.user_id == user_id, MembershipRemoval.tenant_id == org_id
        )
    )


def _remove_membership(member: ClerkMembership) -> None:
    user_id, org_id, at = member.public_user_data.user_id, member.organization.id, member.updated_at
    db.session.execute(
        delete(Membership).where(
            Membership.user_id == user_id,
            Membership.tenant_id == org_id,
            _not_newer(Membership.source_updated_at, at),
        )
    )
    # Remember the removal, so a late `created` of this membership cannot grant access again.
    if not _insert_ignore(
        MembershipRemoval, user_id=user_id, tenant_id=org_id, source_updated_at=at
    ):
        db.session.execute(
            update(MembershipRemoval)
            .where(
                MembershipRemoval.user_id == user_id,
                MembershipRemoval.tenant_id == org_id,
                MembershipRemoval.source_updated_at < at,
            )
            .values(source_updated_at=at, removed_at=utcnow())
        )


# ---------------------------------------------------------------- first sign-in (JIT)


def provision_session(claims: ClerkJitRequest) -> AccountOut:
    """Create the user, personal tenant and org membership a session needs, if missing.

    Never changes existing rows (webhooks are the source of truth for those); returns the
    account in the org when one is given, else in the personal tenant.
    """
    try:
        tenant_id = _provision_session(claims)
    except EnvCatError:
        db.session.rollback()
        raise
    db.session.commit()
    return tenancy.account(claims.user_id, tenant_id)


def _provision_session(claims: ClerkJitRequest) -> str:
    user_id = claims.user_id
    name = _clip(display_name(claims.name))
    email = _free_email(user_id, valid_email(claims.email))
    if not _ensure_user(user_id, name, email=email):
        raise AccountDeleted("This account has been deleted.")
    if claims.org_id is None:
        return user_id
    org_id = claims.org_id
    name = _clip(display_name(claims.org_name)) or org_id
    slug = _clerk_slug(ClerkOrganization(id=org_id, name=name, slug=claims.org_slug, updated_at=0))
    _insert_org(org_id, slug, name=name)
    if not _is_live_org(org_id):
        raise NotFound("This organisation no longer exists.")
    if db.session.get(Membership, (user_id, org_id)) is None:
        if _removed_since(user_id, org_id, None):
            # Clerk removed this membership; only its webhook may grant it again.
            raise NotFound("You are not a member of this organisation.")
        _insert_ignore(
            Membership, user_id=user_id, tenant_id=org_id, role=map_role(claims.org_role)
        )
    return org_id


# ---------------------------------------------------------------- helpers


def _ensure_user(user_id: str, name: str | None, *, email: str | None = None) -> bool:
    """Create a minimal user and its personal tenant unless known; False when deleted."""
    _insert_user(user_id, email, name=name)
    deleted_at = db.session.execute(select(User.deleted_at).where(User.id == user_id)).scalar_one()
    if deleted_at is not None:
        return False
    _ensure_personal_tenant(user_id, name or email or user_id, rename=False)
    return True


def _insert_user(user_id: str, email: str | None, **values: Any) -> bool:
    """A new user with `email`, or its placeholder when another user took it meanwhile."""
    placeholder = {"id": user_id, "email": placeholder_email(user_id), **values}
    if email is None:
        return _insert_ignore(User, **placeholder)
    return _insert_ignore(User, fallback=placeholder, **{**placeholder, "email": email})


def _insert_org(org_id: str, slug: dict[str, str], **values: Any) -> bool:
    """A new organisation tenant with Clerk's slug, or a made one when that got taken."""
    row = {"id": org_id, "kind": "org", **values}
    return _insert_ignore(Tenant, fallback=row, **row, **slug)


def _ensure_personal_tenant(user_id: str, name: str, *, rename: bool) -> None:
    personal = {"id": user_id, "name": name, "kind": "personal"}
    if not _insert_ignore(Tenant, fallback=personal, **personal) and rename:
        db.session.execute(
            update(Tenant)
            .where(Tenant.id == user_id, Tenant.kind == "personal", Tenant.name != name)
            .values(name=name)
        )
    _insert_ignore(Membership, user_id=user_id, tenant_id=user_id, role="owner")


def _free_email(user_id: str, email: str | None) -> str | None:
    """`email` unless another user holds it (then None: the caller keeps the old one)."""
    if email is None:
        return None
    holder = db.session.execute(
        select(User.id).where(User.email == email, User.id != user_id)
    ).scalar_one_or_none()
    if holder is not None:
        log.warning(
            "clerk email already belongs to another user; keeping the old one",
            extra={"user": user_id, "other_user": holder},
        )
        return None
    return email


def _is_live_org(tenant_id: str) -> bool:
    """An organisation tenant that is not deleted (never someone's personal workspace)."""
    row = db.session.execute(
        select(Tenant.kind, Tenant.deleted_at).where(Tenant.id == tenant_id)
    ).one_or_none()
    return row is not None and row.kind == "org" and row.deleted_at is None


def _removed_since(user_id: str, tenant_id: str, at: int | None) -> bool:
    """A removal is recorded that is not older than `at` (any removal when `at` is None)."""
    removed = db.session.execute(
        select(MembershipRemoval.source_updated_at).where(
            MembershipRemoval.user_id == user_id, MembershipRemoval.tenant_id == tenant_id
        )
    ).scalar_one_or_none()
    return removed is not None and (at is None or removed >= at)


def _not_newer(column: InstrumentedAttribute[int | None], at: int) -> ColumnElement[bool]:
    """The stored event is not newer than `at` (or none was stored)."""
    return or_(column.is_(None), column <= at)


def _insert_ignore(
    model: type[Base], *, fallback: dict[str, Any] | None = None, **values: Any
) -> bool:
    """INSERT unless the row exists (race-safe); True when this call inserted.

    The conflict clause names no index. Naming the primary key would make PostgreSQL
    arbitrate on that index alone, and two sessions inserting the same new row at once
    (concurrent first sign-ins) could meet first on another unique index (users.email,
    tenants.slug) and fail with a 500. Without a target any unique conflict is ignored, so
    a primary key still absent afterwards means another row holds one of the unique values:
    then `fallback` (the row's values without the contested ones) is inserted instead.
    """
    table = cast(Table, model.__table__)  # Core, not ORM: a fraction of the overhead
    if _insert_or_nothing(table, values):
        return True
    if fallback is None or _has_row(table, values):
        return False
    return _insert_or_nothing(table, fallback)


def _insert_or_nothing(table: Table, values: dict[str, Any]) -> bool:
    dialect = db.session.get_bind().dialect.name
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = build(table).values(**values).on_conflict_do_nothing()
    # SQLAlchemy reports an INSERT's rowcount only when asked (psycopg's read -1 otherwise).
    return _rowcount(db.session.execute(statement.execution_options(preserve_rowcount=True))) == 1


def _has_row(table: Table, values: dict[str, Any]) -> bool:
    key = [column == values[column.name] for column in table.primary_key]
    return db.session.execute(select(literal(1)).select_from(table).where(*key)).first() is not None


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _clip(text: str | None) -> str | None:
    return text[:MAX_NAME] if text else None
