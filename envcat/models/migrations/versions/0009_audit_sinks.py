"""audit sinks

One syslog collector per tenant that its audit log is streamed to, with the id of
the last event the collector accepted (issue #19).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_sinks",
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_audit_sinks_tenant_id_tenants"),
            primary_key=True,
        ),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("tls", sa.Boolean(), nullable=False),
        sa.Column("ca_pem", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("shipped", sa.BigInteger(), nullable=False),
        sa.Column("last_shipped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_audit_sinks"),
    )


def downgrade() -> None:
    op.drop_table("audit_sinks")
