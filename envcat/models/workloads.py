"""Workload trust policies (issue #16): which OIDC workloads may receive which bundle keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base
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
