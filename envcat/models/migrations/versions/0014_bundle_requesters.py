"""bundle requesters

Who may request each bundle, anyone with the link or signed-in members only, and the
signed-in requester a device grant was made for (issue #17).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_requesters",
        sa.Column(
            "bundle_id",
            sa.String(length=36),
            sa.ForeignKey(
                "bundles.id", ondelete="CASCADE", name="fk_bundle_requesters_bundle_id_bundles"
            ),
            nullable=False,
        ),
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            sa.ForeignKey(
                "tenants.id", ondelete="CASCADE", name="fk_bundle_requesters_tenant_id_tenants"
            ),
            nullable=False,
        ),
        sa.Column("requesters", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("bundle_id", name="pk_bundle_requesters"),
    )
    op.add_column("device_grants", sa.Column("requester_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_grants") as batch:
        batch.drop_column("requester_id")
    op.drop_table("bundle_requesters")
