"""members and invites, per-bundle approvers, notification targets (issue #17)

Plain create_table only, so nothing existing is copied (see 0002).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_invites_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_by", sa.String(length=128), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("uq_invites_token_hash", "invites", ["token_hash"], unique=True)
    op.create_index("ix_invites_tenant_id", "invites", ["tenant_id"])
    op.create_table(
        "bundle_approvers",
        sa.Column(
            "bundle_id",
            sa.String(length=36),
            sa.ForeignKey(
                "bundles.id", ondelete="CASCADE", name="fk_bundle_approvers_bundle_id_bundles"
            ),
            primary_key=True,
        ),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("min_role", sa.String(length=16), nullable=True),
        sa.Column("user_ids", sa.JSON(), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
    )
    op.create_index("ix_bundle_approvers_tenant_id", "bundle_approvers", ["tenant_id"])
    op.create_table(
        "notification_targets",
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey(
                "tenants.id", ondelete="CASCADE", name="fk_notification_targets_tenant_id_tenants"
            ),
            primary_key=True,
        ),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("email_enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notification_targets")
    op.drop_index("ix_bundle_approvers_tenant_id", table_name="bundle_approvers")
    op.drop_table("bundle_approvers")
    op.drop_index("ix_invites_tenant_id", table_name="invites")
    op.drop_index("uq_invites_token_hash", table_name="invites")
    op.drop_table("invites")
