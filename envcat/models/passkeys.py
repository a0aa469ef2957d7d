"""Approver passkeys and the workspace's passkey policy (issue #20)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, false
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base, utcnow
from envcat.models.tables import new_uuid


class Passkey(Base):
    """A WebAuthn credential a user registered to approve requests with."""

    __tablename__ = "passkeys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # base64url, as WebAuthn names it; unique across the server (one authenticator key)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key bytes
    algorithm: Mapped[int] = mapped_column(Integer)  # COSE alg: -7 ES256, -8 EdDSA
    sign_count: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkspacePolicy(Base):
    """Per-workspace settings of the approval flow; no row means the defaults."""

    __tablename__ = "workspace_policies"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    # every approval in this workspace needs a passkey assertion
    require_passkey: Mapped[bool] = mapped_column(Boolean, default=False)
    # approvers type the phrase their terminal shows; no page shows it (RFC 8628 §5.4)
    require_phrase: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
