"""Connector tables (issue #18): provider connections, bundle links and per-name sync state.

A connection's credentials are stored as keyring ciphertext bound to its tenant and id
(`envcat.services.connections`), never in clear. Everything else here is non-secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base, utcnow
from envcat.models.tables import Timestamped, new_uuid

PROVIDERS = ("aws", "gcp")
DIRECTIONS = ("pull", "push", "two-way")


class Connection(Timestamped, Base):
    """A tenant's account at a cloud secret store: where it is and how to sign in."""

    __tablename__ = "connector_connections"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_connector_connections_tenant_name"),
        CheckConstraint("provider IN ('aws', 'gcp')", name="provider"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(8))
    # Non-secret settings: region, endpoint_url, role_arn (aws); project_id, endpoint_url (gcp).
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    credentials: Mapped[str] = mapped_column(Text)  # ciphertext, see envcat.core.kms
    status: Mapped[str] = mapped_column(String(16), default="untested")
    status_message: Mapped[str] = mapped_column(Text, default="")
    tested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Link(Timestamped, Base):
    """A bundle synced with a provider path/prefix in one direction (or both)."""

    __tablename__ = "connector_links"
    __table_args__ = (
        CheckConstraint("direction IN ('pull', 'push', 'two-way')", name="direction"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[str] = mapped_column(
        ForeignKey("connector_connections.id", ondelete="CASCADE"), index=True
    )
    bundle_id: Mapped[str] = mapped_column(ForeignKey("bundles.id", ondelete="CASCADE"), index=True)
    # Provider names starting with `prefix` belong to the link; the rest of the name maps
    # to the variable name (`prod/api/DB_URL` → `DB_URL`).
    prefix: Mapped[str] = mapped_column(String(500), default="")
    direction: Mapped[str] = mapped_column(String(8))
    # A provider secret holding a JSON object becomes one key per member (pull only).
    expand_json: Mapped[bool] = mapped_column(default=False)
    # Explicit provider name ↔ variable name pairs, beside the prefix rule.
    mapping: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    interval_seconds: Mapped[int] = mapped_column(Integer, default=300)
    next_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[str] = mapped_column(String(16), default="never")
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The sync run in progress (set when enqueued, cleared when it finishes).
    run_id: Mapped[str | None] = mapped_column(String(36))


class LinkItem(Base):
    """What both sides held for one name at the last sync, to tell who changed since."""

    __tablename__ = "connector_link_items"
    __table_args__ = (
        UniqueConstraint("link_id", "name", name="uq_connector_link_items_link_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    link_id: Mapped[str] = mapped_column(ForeignKey("connector_links.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))  # the variable name
    remote_name: Mapped[str] = mapped_column(String(500))
    remote_version: Mapped[str] = mapped_column(String(200), default="")
    key_version: Mapped[int] = mapped_column(Integer, default=0)
    # The run that last changed a side, and which way ("pulled" | "pushed"): the run's audit
    # event is built from these rows, so a run resumed after a crash still reports all it did.
    run_id: Mapped[str | None] = mapped_column(String(36))
    action: Mapped[str | None] = mapped_column(String(8))
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
