"""admin service tokens and scanning workloads

Service tokens may carry the `admin` scope (bundles as code from CI, issue #16): such a
token belongs to the workspace, not to a bundle, so `service_tokens.bundle_id` becomes
nullable. Workload trust policies gain `scan` (issue #19): a matching ID token may ask
the scan oracle. A batch copy of `service_tokens` on SQLite is safe: no table refers
to it.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_tokens") as batch:
        batch.alter_column("bundle_id", existing_type=sa.String(length=36), nullable=True)
    op.add_column(
        "workload_policies",
        sa.Column("scan", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # Plain ALTER (SQLite >= 3.35) for the column; tokens without a bundle cannot survive.
    op.drop_column("workload_policies", "scan")
    op.execute("DELETE FROM service_tokens WHERE bundle_id IS NULL")
    with op.batch_alter_table("service_tokens") as batch:
        batch.alter_column("bundle_id", existing_type=sa.String(length=36), nullable=False)
