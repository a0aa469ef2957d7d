"""groups, group members, groups named by bundle rules, per-bundle editors (issue #17)

Plain create_table only, so nothing existing is copied (see 0002).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _fk(column: str, target: str, name: str) -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete="CASCADE", name=name)


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=128),
            _fk("tenant_id", "tenants.id", "fk_groups_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_groups"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_groups_tenant_id"),
    )
    op.create_index("ix_groups_tenant_id", "groups", ["tenant_id"])
    op.create_table(
        "group_members",
        sa.Column(
            "group_id",
            sa.String(length=36),
            _fk("group_id", "groups.id", "fk_group_members_group_id_groups"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("group_id", "user_id", name="pk_group_members"),
        sa.ForeignKeyConstraint(
            ["user_id", "tenant_id"],
            ["memberships.user_id", "memberships.tenant_id"],
            ondelete="CASCADE",
            name="fk_group_members_membership",
        ),
    )
    op.create_index("ix_group_members_user_tenant", "group_members", ["user_id", "tenant_id"])
    op.create_table(
        "bundle_rule_groups",
        sa.Column(
            "bundle_id",
            sa.String(length=36),
            _fk("bundle_id", "bundles.id", "fk_bundle_rule_groups_bundle_id_bundles"),
            nullable=False,
        ),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column(
            "group_id",
            sa.String(length=36),
            _fk("group_id", "groups.id", "fk_bundle_rule_groups_group_id_groups"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("bundle_id", "purpose", "group_id", name="pk_bundle_rule_groups"),
    )
    op.create_index("ix_bundle_rule_groups_group_id", "bundle_rule_groups", ["group_id"])
    op.create_table(
        "bundle_editors",
        sa.Column(
            "bundle_id",
            sa.String(length=36),
            _fk("bundle_id", "bundles.id", "fk_bundle_editors_bundle_id_bundles"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("min_role", sa.String(length=16), nullable=True),
        sa.Column("user_ids", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("bundle_id", name="pk_bundle_editors"),
    )
    op.create_index("ix_bundle_editors_tenant_id", "bundle_editors", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_bundle_editors_tenant_id", table_name="bundle_editors")
    op.drop_table("bundle_editors")
    op.drop_index("ix_bundle_rule_groups_group_id", table_name="bundle_rule_groups")
    op.drop_table("bundle_rule_groups")
    op.drop_index("ix_group_members_user_tenant", table_name="group_members")
    op.drop_table("group_members")
    op.drop_index("ix_groups_tenant_id", table_name="groups")
    op.drop_table("groups")
