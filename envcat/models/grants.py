"""Tables of issue #17's device grants: a bundle's grant policy and the grants themselves.

Kept apart from `tables.py` and `team.py` so the tables of parallel work merge cleanly.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base, utcnow
from envcat.models.tables import new_uuid


class BundleGrantPolicy(Base):
    """How long an approver may trust a device for this bundle; no row = no grants."""

    __tablename__ = "bundle_grant_policies"

    bundle_id: Mapped[str] = mapped_column(
        ForeignKey("bundles.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    max_hours: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    updated_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class DeviceGrant(Base):
    """One approver's standing yes: this device key may receive these keys of this bundle
    until `expires_at`, unless revoked. `approvers` are every voter of the k-of-n approval
    that made it; `approved_by` cast the final vote and ticked the grant."""

    __tablename__ = "device_grants"
    __table_args__ = (
        Index("ix_device_grants_lookup", "tenant_id", "bundle_id", "device_fingerprint"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    bundle_id: Mapped[str] = mapped_column(ForeignKey("bundles.id", ondelete="CASCADE"))
    device_fingerprint: Mapped[str] = mapped_column(String(64))
    keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    approved_by: Mapped[str] = mapped_column(String(128))
    approvers: Mapped[list[str]] = mapped_column(JSON, default=list)
    request_id: Mapped[str] = mapped_column(String(128))
    # the signed-in requester of that request (issue #17, "who may request"), or None
    requester_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
