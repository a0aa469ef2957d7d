"""secret-scanning fingerprints and service-token scopes

Each key value and kept version gets `scan_fingerprint`, HMAC(scan key, SHA-256(value))
(issue #19); service tokens get `scopes` ("release", "scan"), existing tokens keeping
"release" only. Plain ALTERs: a batch copy of `keys` with SQLite foreign keys on would
cascade deletes (see 0002). Existing values have no fingerprint until
`envcat server scan-fingerprints` runs (the values are encrypted; a migration has no key).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("keys", "key_versions"):
        op.add_column(table, sa.Column("scan_fingerprint", sa.String(length=80), nullable=True))
        op.create_index(f"ix_{table}_scan_fingerprint", table, ["scan_fingerprint"])
    op.add_column(
        "service_tokens",
        sa.Column("scopes", sa.JSON(), nullable=False, server_default='["release"]'),
    )


def downgrade() -> None:
    # Plain ALTER (SQLite >= 3.35), not a batch copy: see 0002.
    op.drop_column("service_tokens", "scopes")
    for table in ("key_versions", "keys"):
        op.drop_index(f"ix_{table}_scan_fingerprint", table_name=table)
        op.drop_column(table, "scan_fingerprint")
