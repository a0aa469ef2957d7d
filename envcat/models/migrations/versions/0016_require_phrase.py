"""approvers type the verification phrase

A workspace policy may require approvers to type the phrase the requesting terminal
shows instead of reading it on the approval page (RFC 8628 §5.4): someone holding only
a phished link cannot approve. Existing rows keep the old behaviour (false).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "workspace_policies",
        sa.Column("require_phrase", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("workspace_policies", "require_phrase")
