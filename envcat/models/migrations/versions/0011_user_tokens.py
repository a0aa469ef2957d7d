"""user tokens and no self-approval

The short-lived tokens of signed-in terminals (`envcat login`, issue #16) and the
bundle approver rule's `no_self_approval` flag (issue #17).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_tokens",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_user_tokens_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.String(length=128),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_user_tokens_user_id_users"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_user_tokens"),
        sa.UniqueConstraint("prefix", name="uq_user_tokens_prefix"),
    )
    op.create_index("ix_user_tokens_tenant_id", "user_tokens", ["tenant_id"])
    op.create_index("ix_user_tokens_user_id", "user_tokens", ["user_id"])
    with op.batch_alter_table("bundle_approvers") as batch:
        batch.add_column(
            sa.Column(
                "no_self_approval", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("bundle_approvers") as batch:
        batch.drop_column("no_self_approval")
    op.drop_index("ix_user_tokens_user_id", table_name="user_tokens")
    op.drop_index("ix_user_tokens_tenant_id", table_name="user_tokens")
    op.drop_table("user_tokens")
