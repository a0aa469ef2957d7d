"""device grants

A bundle's grant policy (how many hours an approver may trust a device for it) and the
grants: device key fingerprint, bundle, keys, approver, expiry (issue #17).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _tenant(table: str) -> sa.Column[str]:
    return sa.Column(
        "tenant_id",
        sa.String(length=128),
        sa.ForeignKey("tenants.id", ondelete="CASCADE", name=f"fk_{table}_tenant_id_tenants"),
        nullable=False,
    )


def _bundle(table: str) -> sa.Column[str]:
    return sa.Column(
        "bundle_id",
        sa.String(length=36),
        sa.ForeignKey("bundles.id", ondelete="CASCADE", name=f"fk_{table}_bundle_id_bundles"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "bundle_grant_policies",
        _bundle("bundle_grant_policies"),
        _tenant("bundle_grant_policies"),
        sa.Column("max_hours", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("bundle_id", name="pk_bundle_grant_policies"),
    )
    op.create_table(
        "device_grants",
        sa.Column("id", sa.String(length=36), nullable=False),
        _tenant("device_grants"),
        _bundle("device_grants"),
        sa.Column("device_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("approved_by", sa.String(length=128), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_device_grants"),
    )
    op.create_index(
        "ix_device_grants_lookup",
        "device_grants",
        ["tenant_id", "bundle_id", "device_fingerprint"],
    )


def downgrade() -> None:
    op.drop_index("ix_device_grants_lookup", table_name="device_grants")
    op.drop_table("device_grants")
    op.drop_table("bundle_grant_policies")
