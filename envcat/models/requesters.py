"""Issue #17's "who may request" rule of a bundle: anyone with the link, or members only.

Kept apart from `tables.py`, `team.py` and `grants.py` so parallel work merges cleanly.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base, utcnow


class BundleRequesters(Base):
    """Whose requests the bundle releases to; no row = "anyone" (anyone with the link)."""

    __tablename__ = "bundle_requesters"

    bundle_id: Mapped[str] = mapped_column(
        ForeignKey("bundles.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    requesters: Mapped[str] = mapped_column(String(16), default="anyone")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    updated_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
