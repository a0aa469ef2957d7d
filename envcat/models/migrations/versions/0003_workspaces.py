"""workspaces: tenants.slug and keys.dangerous_ok

Requests now name the workspace they are for (issue #11): every tenant gets a
stable, URL-safe, unique slug, made from its name for existing rows. Keys whose
names change how programs load or run need an admin's explicit `dangerous_ok`.

Revision ID: 0003
Revises: 0002
"""

import re

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def _slugify(text: str) -> str:
    # A frozen copy of envcat.core.wire.slugify: a migration must not change when the app does.
    base = text.split("@", 1)[0] if "@" in text else text
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-_")[:48].strip("-_")


def upgrade() -> None:
    op.add_column('tenants', sa.Column('slug', sa.String(length=64), nullable=True))
    op.add_column(
        'keys',
        sa.Column('dangerous_ok', sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    tenants = sa.table('tenants', sa.column('id', sa.String), sa.column('name', sa.String),
                       sa.column('slug', sa.String))
    connection = op.get_bind()
    taken: set[str] = set()
    rows = connection.execute(sa.select(tenants.c.id, tenants.c.name).order_by(tenants.c.id))
    for tenant_id, name in rows.all():
        base = _slugify(name or "") or _slugify(tenant_id) or "workspace"
        slug, suffix = base, 2
        while slug in taken:
            slug, suffix = f"{base}-{suffix}", suffix + 1
        taken.add(slug)
        connection.execute(tenants.update().where(tenants.c.id == tenant_id).values(slug=slug))
    op.create_index('uq_tenants_slug', 'tenants', ['slug'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_tenants_slug', table_name='tenants')
    # Plain ALTERs (SQLite >= 3.35), not batch copies: see 0002.
    op.drop_column('keys', 'dangerous_ok')
    op.drop_column('tenants', 'slug')
