"""clerk deletions: tenants.deleted_at and membership_removals

Late or redelivered Clerk events must not bring back a deleted organisation or a
removed membership (docs/clerk.md).

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('tenants', sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))

    op.create_table('membership_removals',
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('tenant_id', sa.String(length=128), nullable=False),
    sa.Column('source_updated_at', sa.BigInteger(), nullable=False),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'tenant_id', name=op.f('pk_membership_removals'))
    )


def downgrade() -> None:
    op.drop_table('membership_removals')
    # A plain ALTER (SQLite >= 3.35), not a batch copy: with foreign keys on, dropping the
    # old tenants table would cascade-delete every bundle and key.
    op.drop_column('tenants', 'deleted_at')
