"""Tables of DESIGN §3. Tenant data always carries `tenant_id`; deletes cascade."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from envcat.core.wire import slugify
from envcat.models.base import Base, utcnow

ROLES = ("owner", "admin", "member", "viewer")
TENANT_KINDS = ("personal", "org")


def new_uuid() -> str:
    """Random UUID4 as text, the id of bundles and keys."""
    return str(uuid.uuid4())


class Timestamped:
    """created_at / updated_at columns kept by the ORM."""

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


def _free_slug(context: DefaultExecutionContext) -> str:
    """A unique slug made from the new tenant's name (or id) when none was given.

    Runs before the INSERT on the same connection, so every way of creating a
    tenant (sign-up, Clerk provisioning, `create-user`) gets one.
    """
    params = context.get_current_parameters()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
    base = slugify(str(params.get("name") or "")) or slugify(str(params["id"])) or "workspace"
    table = Tenant.__table__
    taken = set(
        context.connection.execute(
            select(table.c.slug).where(table.c.slug.like(f"{base}%"))
        ).scalars()
    )
    if base not in taken:
        return base
    suffix = 2
    while f"{base}-{suffix}" in taken:
        suffix += 1
    return f"{base}-{suffix}"


class Tenant(Timestamped, Base):
    """A personal workspace (Clerk user id) or an organisation (Clerk org id)."""

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("kind IN ('personal', 'org')", name="kind"),
        Index("uq_tenants_slug", "slug", unique=True),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    # What the CLI names (`envcat get -w acme …`): stable, URL-safe, unique; the owner may edit it.
    slug: Mapped[str] = mapped_column(String(64), default=_free_slug)
    # Clerk's updated_at (ms) of the last event applied, so late events cannot undo newer ones.
    source_updated_at: Mapped[int | None] = mapped_column(BigInteger)
    # Set when Clerk deletes the organisation (or the personal tenant's user): its data is
    # purged at once and the row stays, so a late event cannot bring the tenant back.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", passive_deletes=True
    )


class User(Timestamped, Base):
    """A person: a Clerk user or a built-in account with an argon2id hash."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source_updated_at: Mapped[int | None] = mapped_column(BigInteger)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def is_deleted(self) -> bool:
        """Soft-deleted users are refused everywhere."""
        return self.deleted_at is not None


class Membership(Base):
    """A user's role in a tenant."""

    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name="role"),
        Index("ix_memberships_tenant_id", "tenant_id"),
    )

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))
    source_updated_at: Mapped[int | None] = mapped_column(BigInteger)

    user: Mapped[User] = relationship(back_populates="memberships")
    tenant: Mapped[Tenant] = relationship(back_populates="memberships")


class Bundle(Timestamped, Base):
    """A named selection of keys, e.g. `production/api`."""

    __tablename__ = "bundles"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_bundles_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)

    entries: Mapped[list[BundleKey]] = relationship(
        back_populates="bundle",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="BundleKey.position",
    )


class Key(Timestamped, Base):
    """A library key: an environment-variable name and its encrypted value."""

    __tablename__ = "keys"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_keys_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(Text)  # ciphertext, see envcat.core.kms
    is_secret: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # An admin's explicit yes to a name that changes how programs load or run (LD_PRELOAD…).
    dangerous_ok: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # HMAC(scan key, SHA-256(value)) as `<scan key id>:<hex>` for secret scanning (issue #19);
    # null for a value under 12 characters. Never an unkeyed hash.
    scan_fingerprint: Mapped[str | None] = mapped_column(String(80), index=True)


class BundleKey(Base):
    """A key attached to a bundle, with its order and whether it must be released."""

    __tablename__ = "bundle_keys"
    __table_args__ = (
        Index("ix_bundle_keys_key_id", "key_id"),
        Index("uq_bundle_keys_alias", "bundle_id", "alias", unique=True),
    )

    bundle_id: Mapped[str] = mapped_column(
        ForeignKey("bundles.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(ForeignKey("keys.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The variable name the bundle exports the key as (`PROD_DATABASE_URL` as `DATABASE_URL`).
    alias: Mapped[str | None] = mapped_column(String(200))

    bundle: Mapped[Bundle] = relationship(back_populates="entries")
    key: Mapped[Key] = relationship(lazy="joined")


class KeyVersion(Base):
    """One value a key has held (the current one included), encrypted like the key itself.

    The ciphertext's associated data binds it to the tenant, the key and the version number,
    so a version copied onto another key, tenant or version number does not decrypt.
    """

    __tablename__ = "key_versions"
    __table_args__ = (
        UniqueConstraint("key_id", "version", name="uq_key_versions_key_version"),
        Index("ix_key_versions_tenant_id", "tenant_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("keys.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    value: Mapped[str] = mapped_column(Text)  # ciphertext, see envcat.services.versions
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)  # bytes of UTF-8 plaintext
    # The import that wrote this version, so one import can be told apart (and undone).
    import_id: Mapped[str | None] = mapped_column(String(36))
    # As `Key.scan_fingerprint`, for this version's value (issue #19).
    scan_fingerprint: Mapped[str | None] = mapped_column(String(80), index=True)

    # Many-to-one only, so a flush inserts a new key before its first version; deleting a
    # key deletes its versions in the database (ON DELETE CASCADE).
    key: Mapped[Key] = relationship()


class AuditEvent(Base):
    """Append-only, hash-chained per tenant. No foreign key: the log outlives its subjects."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # Two writers racing on one tenant cannot both chain onto the same row.
        UniqueConstraint("tenant_id", "prev_hash", name="uq_audit_events_chain"),
        Index("ix_audit_events_tenant_id_id", "tenant_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class WebhookEvent(Base):
    """A received Svix delivery, keyed by `svix-id`, so each is processed once."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MembershipRemoval(Base):
    """A Clerk membership that was removed, so a late `created` cannot grant access again.

    No foreign keys: the record must outlive (or precede) the user and the tenant.
    """

    __tablename__ = "membership_removals"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Clerk's updated_at (ms) of the removed membership: only a newer membership counts.
    source_updated_at: Mapped[int] = mapped_column(BigInteger)
    removed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
