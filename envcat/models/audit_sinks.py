"""Where a workspace's audit log is streamed (issue #19): one syslog sink per tenant."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base, utcnow


class AuditSink(Base):
    """A syslog (RFC 5424) collector and how far the workspace's log has been shipped to it.

    `cursor` is the id of the last audit event the collector accepted; the shipper
    resends from there after any failure, so delivery is at least once and in order.
    """

    __tablename__ = "audit_sinks"

    tenant_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    tls: Mapped[bool] = mapped_column(Boolean, default=True)
    # PEM certificates the collector's certificate must chain to; the system's when empty.
    ca_pem: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    shipped: Mapped[int] = mapped_column(BigInteger, default=0)
    last_shipped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    updated_by: Mapped[str | None] = mapped_column(String(128))
