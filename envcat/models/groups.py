"""Tables of issue #17's groups: teams of a workspace's members, and per-bundle edit rules.

Kept apart from `team.py` so the tables of parallel work merge cleanly. A group
member row points at the membership itself, so removing someone from the
workspace (by an admin, by Clerk, by deleting the account) drops them from every
group in the same statement.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from envcat.models.base import Base, utcnow
from envcat.models.tables import new_uuid


class Group(Base):
    """A named team of members of one workspace (EnvCat's own, also under Clerk)."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))


class GroupMember(Base):
    """One member of a group; cascades away with the group or the workspace membership."""

    __tablename__ = "group_members"
    __table_args__ = (
        ForeignKeyConstraint(
            ["user_id", "tenant_id"],
            ["memberships.user_id", "memberships.tenant_id"],
            ondelete="CASCADE",
            name="fk_group_members_membership",
        ),
        Index("ix_group_members_user_tenant", "user_id", "tenant_id"),
    )

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    added_by: Mapped[str | None] = mapped_column(String(128))


class BundleRuleGroup(Base):
    """A group named by a bundle's rule: `purpose` approve (who may approve) or edit."""

    __tablename__ = "bundle_rule_groups"

    bundle_id: Mapped[str] = mapped_column(
        ForeignKey("bundles.id", ondelete="CASCADE"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class BundleEditors(Base):
    """Who may edit one bundle: a minimum role and/or named users (groups in BundleRuleGroup).

    No row means today's rule: admins and owners. Owners may always edit.
    """

    __tablename__ = "bundle_editors"

    bundle_id: Mapped[str] = mapped_column(
        ForeignKey("bundles.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(String(128), index=True)
    min_role: Mapped[str | None] = mapped_column(String(16))
    user_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    updated_by: Mapped[str | None] = mapped_column(String(128))
