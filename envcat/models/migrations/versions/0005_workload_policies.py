"""workload trust policies and service tokens

Machine identities (issue #16): a tenant trusts an issuer's OIDC tokens whose
claims match its rules to receive (some keys of) one bundle; a service token
(stored as prefix + SHA-256) does the same where OIDC is unavailable.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workload_policies",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey(
                "tenants.id", ondelete="CASCADE", name="fk_workload_policies_tenant_id_tenants"
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("audience", sa.String(length=500), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column(
            "bundle_id",
            sa.String(length=36),
            sa.ForeignKey(
                "bundles.id", ondelete="CASCADE", name="fk_workload_policies_bundle_id_bundles"
            ),
            nullable=False,
        ),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_workload_policies_tenant_name"),
        sa.CheckConstraint(
            "mode IN ('automatic', 'approval')", name=op.f("ck_workload_policies_workload_mode")
        ),
    )
    op.create_index("ix_workload_policies_tenant_id", "workload_policies", ["tenant_id"])
    op.create_index("ix_workload_policies_bundle_id", "workload_policies", ["bundle_id"])
    op.create_table(
        "service_tokens",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey(
                "tenants.id", ondelete="CASCADE", name="fk_service_tokens_tenant_id_tenants"
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "bundle_id",
            sa.String(length=36),
            sa.ForeignKey(
                "bundles.id", ondelete="CASCADE", name="fk_service_tokens_bundle_id_bundles"
            ),
            nullable=False,
        ),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("prefix", name="uq_service_tokens_prefix"),
    )
    op.create_index("ix_service_tokens_tenant_id", "service_tokens", ["tenant_id"])
    op.create_index("ix_service_tokens_bundle_id", "service_tokens", ["bundle_id"])


def downgrade() -> None:
    op.drop_index("ix_service_tokens_bundle_id", table_name="service_tokens")
    op.drop_index("ix_service_tokens_tenant_id", table_name="service_tokens")
    op.drop_table("service_tokens")
    op.drop_index("ix_workload_policies_bundle_id", table_name="workload_policies")
    op.drop_index("ix_workload_policies_tenant_id", table_name="workload_policies")
    op.drop_table("workload_policies")
