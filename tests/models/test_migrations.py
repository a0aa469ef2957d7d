"""The same migrations build the same schema on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from envcat.models import Base, migrate

EXPECTED_TABLES = {
    "tenants",
    "users",
    "memberships",
    "bundles",
    "keys",
    "bundle_keys",
    "audit_events",
    "webhook_events",
    "key_versions",
    "audit_sinks",
    "workload_policies",
    "service_tokens",
    "connector_connections",
    "connector_links",
    "connector_link_items",
}


def test_upgrade_creates_every_table_and_is_idempotent(database_url: str) -> None:
    migrate.upgrade(database_url)
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) >= EXPECTED_TABLES
        for table in Base.metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == set(table.columns.keys()), table.name
        uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("bundles")}
        assert ("tenant_id", "name") in uniques
    finally:
        engine.dispose()


def test_downgrade_to_base_then_upgrade_again(database_url: str) -> None:
    migrate.upgrade(database_url)
    migrate.downgrade(database_url, "base")
    engine = create_engine(database_url)
    try:
        assert not EXPECTED_TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    migrate.upgrade(database_url)


def _seed(conn) -> None:
    conn.execute(
        text(
            "INSERT INTO tenants (id, name, kind, created_at, updated_at) "
            "VALUES ('t1', 'T', 'personal', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO bundles (id, tenant_id, name, description, tags, created_at, updated_at) "
            "VALUES ('b1', 't1', 'production/api', '', '[]', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO keys (id, tenant_id, name, value, is_secret, description, created_at, "
            "updated_at) VALUES ('k1', 't1', 'A', 'v1.x.y.z', true, '', CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO bundle_keys (bundle_id, key_id, position, required, created_at) "
            "VALUES ('b1', 'k1', 0, false, CURRENT_TIMESTAMP)"
        )
    )


def test_constraints_and_cascades_hold_on_both_backends(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            _seed(conn)
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO bundles (id, tenant_id, name, description, tags, created_at, "
                    "updated_at) VALUES ('b2', 't1', 'production/api', '', '[]', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM tenants WHERE id = 't1'"))
        with engine.connect() as conn:
            for table in ("bundles", "keys", "bundle_keys"):
                assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0  # noqa: S608
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_busy_timeout(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10000
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()
