"""connectors: provider connections, bundle links and per-name sync state

Issue #18. New tables only; credentials are keyring ciphertext.

Revision ID: 0006
Revises: 0005
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "connector_connections",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey(
                "tenants.id", ondelete="CASCADE", name="fk_connector_connections_tenant_id_tenants"
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=8), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("credentials", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("tested_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.UniqueConstraint("tenant_id", "name", name="uq_connector_connections_tenant_name"),
        sa.CheckConstraint(
            "provider IN ('aws', 'gcp')", name="ck_connector_connections_provider"
        ),
    )
    op.create_index(
        "ix_connector_connections_tenant_id", "connector_connections", ["tenant_id"]
    )
    op.create_table(
        "connector_links",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey(
                "tenants.id", ondelete="CASCADE", name="fk_connector_links_tenant_id_tenants"
            ),
            nullable=False,
        ),
        sa.Column(
            "connection_id",
            sa.String(length=36),
            sa.ForeignKey(
                "connector_connections.id",
                ondelete="CASCADE",
                name="fk_connector_links_connection_id_connector_connections",
            ),
            nullable=False,
        ),
        sa.Column(
            "bundle_id",
            sa.String(length=36),
            sa.ForeignKey(
                "bundles.id", ondelete="CASCADE", name="fk_connector_links_bundle_id_bundles"
            ),
            nullable=False,
        ),
        sa.Column("prefix", sa.String(length=500), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("expand_json", sa.Boolean(), nullable=False),
        sa.Column("mapping", sa.JSON(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("next_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_summary", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        *_timestamps(),
        sa.CheckConstraint(
            "direction IN ('pull', 'push', 'two-way')", name="ck_connector_links_direction"
        ),
    )
    for column in ("tenant_id", "connection_id", "bundle_id", "next_sync_at"):
        op.create_index(f"ix_connector_links_{column}", "connector_links", [column])
    op.create_table(
        "connector_link_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "link_id",
            sa.String(length=36),
            sa.ForeignKey(
                "connector_links.id",
                ondelete="CASCADE",
                name="fk_connector_link_items_link_id_connector_links",
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("remote_name", sa.String(length=500), nullable=False),
        sa.Column("remote_version", sa.String(length=200), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=8), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("link_id", "name", name="uq_connector_link_items_link_name"),
    )


def downgrade() -> None:
    op.drop_table("connector_link_items")
    for column in ("tenant_id", "connection_id", "bundle_id", "next_sync_at"):
        op.drop_index(f"ix_connector_links_{column}", table_name="connector_links")
    op.drop_table("connector_links")
    op.drop_index("ix_connector_connections_tenant_id", table_name="connector_connections")
    op.drop_table("connector_connections")
