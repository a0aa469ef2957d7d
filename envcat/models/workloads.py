"""Machine identities (issue #16): OIDC workload trust policies and service tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base, utcnow
from envcat.models.tables import Timestamped, new_uuid

WORKLOAD_MODES = ("automatic", "approval")


class WorkloadPolicy(Timestamped, Base):
    """A tenant's trust in an OIDC issuer's tokens whose claims match `rules`.

    `rules` is a list of `{"claim", "op": "eq"|"glob", "value"}`; `keys` the key names of
    the bundle it may receive (empty = every key of the bundle). `mode` says whether a
    matching token is delivered at once or waits for a person's approval.
    """

    __tablename__ = "workload_policies"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_workload_policies_tenant_name"),
        CheckConstraint("mode IN ('automatic', 'approval')", name="workload_mode"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    issuer: Mapped[str] = mapped_column(String(500))
    audience: Mapped[str] = mapped_column(String(500))
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    bundle_id: Mapped[str] = mapped_column(ForeignKey("bundles.id", ondelete="CASCADE"), index=True)
    keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    mode: Mapped[str] = mapped_column(String(16), default="approval")
    # issue #19: a matching token may also ask the scan oracle (never more than that)
    scan: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ServiceToken(Base):
    """A bearer token for CI without OIDC (issue #16): one bundle's keys, until it expires.

    Only `prefix` (for lookup) and the SHA-256 of the whole token are stored; the token
    itself is shown once, at creation.
    """

    __tablename__ = "service_tokens"
    __table_args__ = (UniqueConstraint("prefix", name="uq_service_tokens_prefix"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64))
    # None for a workspace-wide token (the "admin" scope, migration 0015)
    bundle_id: Mapped[str | None] = mapped_column(
        ForeignKey("bundles.id", ondelete="CASCADE"), index=True
    )
    keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the token may do (issue #19): "release" its bundle's keys, "scan" for leaked values;
    # "admin" (alone) administers the workspace like an admin (bundles as code, issue #16).
    scopes: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["release"])
