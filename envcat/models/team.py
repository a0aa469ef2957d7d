"""Tables of issue #17: invitations, who may approve each bundle, a workspace's notifications.

Kept apart from `tables.py` so the tables of parallel work merge cleanly.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base, utcnow
from envcat.models.tables import new_uuid


class Invite(Base):
    """An invitation to join a workspace with a role; the token is stored as a SHA-256 hash.

    Single use: `accepted_at` (or `revoked_at`) is set once, by a conditional UPDATE.
    """

    __tablename__ = "invites"
    __table_args__ = (
        Index("uq_invites_token_hash", "token_hash", unique=True),
        Index("ix_invites_tenant_id", "tenant_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))  # lower case
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64))
    invited_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    accepted_by: Mapped[str | None] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BundleApprovers(Base):
    """Who may approve releases of one bundle: a minimum role and/or named users.

    No row means today's rule: any member or above. `min_role` NULL means named users only.
    """

    __tablename__ = "bundle_approvers"

    bundle_id: Mapped[str] = mapped_column(
        ForeignKey("bundles.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(String(128), index=True)
    min_role: Mapped[str | None] = mapped_column(String(16))
    user_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    approvals_required: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # issue #17: the person a request names as its requester may not approve it
    no_self_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    updated_by: Mapped[str | None] = mapped_column(String(128))


class NotificationTarget(Base):
    """A workspace's notification settings: its webhook URL and signing secret (encrypted)."""

    __tablename__ = "notification_targets"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # The HMAC secret, encrypted with BUNDLE_KMS_KEY like a key value (envcat.core.kms).
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    email_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
