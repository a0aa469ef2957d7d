"""workload trust policies

OIDC workload identities (issue #16): a tenant trusts an issuer's tokens whose
claims match its rules to receive (some keys of) one bundle.

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


def downgrade() -> None:
    op.drop_index("ix_workload_policies_bundle_id", table_name="workload_policies")
    op.drop_index("ix_workload_policies_tenant_id", table_name="workload_policies")
    op.drop_table("workload_policies")
