"""key versions and bundle aliases

Every write of a key value keeps its ciphertext as a numbered version (issue #19),
and a bundle may export a key under another variable name (`bundle_keys.alias`).
Plain create_table and ALTERs only: a batch copy of `keys` or `bundle_keys` with
SQLite foreign keys on would cascade deletes (see 0002).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "key_id",
            sa.String(length=36),
            sa.ForeignKey("keys.id", ondelete="CASCADE", name="fk_key_versions_key_id_keys"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("import_id", sa.String(length=36), nullable=True),
        sa.UniqueConstraint("key_id", "version", name="uq_key_versions_key_version"),
    )
    op.create_index("ix_key_versions_tenant_id", "key_versions", ["tenant_id"])
    op.add_column("bundle_keys", sa.Column("alias", sa.String(length=200), nullable=True))
    op.create_index("uq_bundle_keys_alias", "bundle_keys", ["bundle_id", "alias"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_bundle_keys_alias", table_name="bundle_keys")
    # Plain ALTER (SQLite >= 3.35), not a batch copy: see 0002.
    op.drop_column("bundle_keys", "alias")
    op.drop_index("ix_key_versions_tenant_id", table_name="key_versions")
    op.drop_table("key_versions")
