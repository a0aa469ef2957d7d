"""Consistent, encrypted logical backups of the database, and their verified restore.

`write_backup` reads every table inside one read-only snapshot (PostgreSQL: a
REPEATABLE READ READ ONLY transaction; SQLite: one deferred read transaction, which
WAL keeps consistent while writers go on) and streams JSON lines through
`backup_crypto.EncryptedWriter`: a manifest first, then each table's rows in
foreign-key order. Being logical, a backup restores across SQLite and PostgreSQL.

`read_backup` checks a file end to end without touching any database (authenticity,
completeness, row counts and every tenant's audit chain against the manifest);
`restore_backup` then loads it into an empty database in one transaction that
re-checks counts and chain heads before it commits. Values stay ciphertext under
BUNDLE_KMS_KEY throughout: a backup restores nothing readable without that keyring.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, func, select, text

import envcat
from envcat.models import migrate
from envcat.services.backup_crypto import (
    BackupError,
    EncryptedWriter,
    Identity,
    Passphrase,
    Recipient,
)
from envcat.services.backup_records import (
    AUDIT_TABLE,
    FORMAT_VERSION,
    AuditHead,
    Manifest,
    Section,
    decode_value,
    encode_value,
    read_backup,
    record_line,
    sections,
)

SKIPPED_TABLES = frozenset({"alembic_version"})
ROWS_PER_RECORD = 500

__all__ = ["Manifest", "read_backup", "restore_backup", "write_backup"]


def _engine(database_url: str) -> Engine:
    # Error messages must not quote bound parameters (they may be ciphertext or emails).
    return create_engine(database_url, hide_parameters=True)


def known_revisions(database_url: str) -> set[str]:
    """Every schema revision this EnvCat knows."""
    script = ScriptDirectory.from_config(migrate.alembic_config(database_url))
    return {rev.revision for rev in script.walk_revisions()}


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection reading one consistent snapshot, rolled back at the end."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        elif conn.dialect.name == "sqlite":
            # pysqlite only opens a transaction before writes: without this BEGIN every
            # SELECT would read its own, later state, and tables would disagree.
            conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


def _tables(conn: Connection) -> list[Table]:
    metadata = MetaData()
    metadata.reflect(conn)
    return [table for table in metadata.sorted_tables if table.name not in SKIPPED_TABLES]


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _audit_heads(conn: Connection, tables: list[Table]) -> dict[str, AuditHead]:
    events = next((t for t in tables if t.name == AUDIT_TABLE), None)
    if events is None:
        return {}
    last = (
        select(events.c.tenant_id, func.max(events.c.id).label("last"), func.count().label("n"))
        .group_by(events.c.tenant_id)
        .subquery()
    )
    rows = conn.execute(
        select(last.c.tenant_id, last.c.n, events.c.hash).join(events, events.c.id == last.c.last)
    )
    return {tenant: AuditHead(events=int(n), head=head) for tenant, n, head in rows}


def write_backup(
    database_url: str,
    out: BinaryIO,
    target: Recipient | Passphrase,
    signer: bytes | None = None,
) -> Manifest:
    """Stream an encrypted snapshot of the whole database to `out` (signed with the Ed25519
    seed `signer` when given); return its manifest."""
    engine = _engine(database_url)
    try:
        with _snapshot(engine) as conn:
            revision = _revision(conn)
            if revision is None:
                raise BackupError("the database has no EnvCat schema (run envcat server init-db)")
            tables = _tables(conn)
            manifest = Manifest(
                format=FORMAT_VERSION,
                envcat_version=envcat.__version__,
                created_at=datetime.now(UTC),
                dialect=conn.dialect.name,
                schema_revision=revision,
                tables={table.name: _count(conn, table) for table in tables},
                audit_heads=_audit_heads(conn, tables),
            )
            writer = EncryptedWriter(out, target, signer)
            writer.write(record_line({"manifest": manifest.model_dump(mode="json")}))
            for table in tables:
                _write_table(conn, table, writer)
            writer.write(record_line({"end": True}))
            writer.close()
    finally:
        engine.dispose()
    return manifest


def _write_table(conn: Connection, table: Table, writer: EncryptedWriter) -> None:
    columns = [column.name for column in table.columns]
    writer.write(record_line({"table": table.name, "columns": columns}))
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(stream_results=True, yield_per=ROWS_PER_RECORD).execute(
        select(table).order_by(*order)
    )
    for batch in result.partitions():
        rows = [[encode_value(value) for value in row] for row in batch]
        writer.write(record_line({"rows": rows}))


def database_is_empty(database_url: str) -> bool:
    """True when no EnvCat table holds a row (a schema without rows counts as empty)."""
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            return all(_count(conn, table) == 0 for table in _tables(conn))
    finally:
        engine.dispose()


def _prepare_schema(database_url: str, manifest: Manifest) -> None:
    if manifest.schema_revision not in known_revisions(database_url):
        raise BackupError(
            f"the backup's schema revision {manifest.schema_revision} is newer than this "
            "EnvCat knows: restore it with the version that wrote it "
            f"({manifest.envcat_version})"
        )
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            current = _revision(conn)
    finally:
        engine.dispose()
    if current is None:
        migrate.upgrade(database_url, manifest.schema_revision)
    elif current != manifest.schema_revision:
        raise BackupError(
            f"the target database's schema is at revision {current}, the backup's at "
            f"{manifest.schema_revision}: restore into a database without tables"
        )


def restore_backup(database_url: str, path: Path, identity: Identity) -> Manifest:
    """Load a checked backup into an empty database, then migrate it to the newest schema.

    Refuses a non-empty database. The rows go in within one transaction that is committed
    only once the file ended properly and counts and audit chain heads match the manifest.
    """
    if not database_is_empty(database_url):
        raise BackupError("the target database is not empty; restore only into an empty one")
    manifest = read_backup(path, identity)
    _prepare_schema(database_url, manifest)
    engine = _engine(database_url)
    try:
        with engine.begin() as conn, path.open("rb") as source:
            _load(conn, source, identity, manifest)
    finally:
        engine.dispose()
    migrate.upgrade(database_url)
    return manifest


def _load(conn: Connection, source: BinaryIO, identity: Identity, expected: Manifest) -> None:
    tables = {table.name: table for table in _tables(conn)}
    if any(_count(conn, table) for table in tables.values()):
        raise BackupError("the target database is not empty; restore only into an empty one")
    if set(tables) != set(expected.tables):
        raise BackupError("the backup's tables differ from the schema at its revision")
    naive = conn.dialect.name == "sqlite"
    for item in sections(source, identity):
        if isinstance(item, Manifest):
            if item != expected:
                raise BackupError("the backup changed while it was being restored")
            continue
        table = tables.get(item.name)
        if table is None or set(item.columns) != set(table.columns.keys()):
            raise BackupError(f"table {item.name}: the backup's columns differ from the schema")
        if item.rows:
            conn.execute(table.insert(), _decoded(item, naive))
    counts = {name: _count(conn, table) for name, table in tables.items()}
    if counts != expected.tables or _audit_heads(conn, list(tables.values())) != (
        expected.audit_heads
    ):
        raise BackupError("the restored rows differ from the manifest; nothing was restored")
    if conn.dialect.name == "postgresql":
        _reset_sequences(conn, list(tables.values()))


def _decoded(section: Section, naive_datetimes: bool) -> list[dict[str, object]]:
    try:
        return [
            {c: decode_value(v, naive_datetimes) for c, v in zip(section.columns, row, strict=True)}
            for row in section.rows
        ]
    except (KeyError, TypeError, ValueError, ArithmeticError):
        raise BackupError(f"table {section.name}: the backup's rows are malformed") from None


def keyring_ids_in_use(database_url: str) -> dict[str, int]:
    """How many stored values (keys and kept versions) each BUNDLE_KMS_KEY key id encrypts."""
    engine = _engine(database_url)
    used: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            for name in ("keys", "key_versions"):
                table = Table(name, MetaData(), autoload_with=conn)
                for (value,) in conn.execute(select(table.c.value)):
                    parts = str(value).split(".")
                    kid = parts[1] if len(parts) == 4 else "?"
                    used[kid] = used.get(kid, 0) + 1
    finally:
        engine.dispose()
    return used


def _reset_sequences(conn: Connection, tables: list[Table]) -> None:
    """Move each serial column's sequence past the restored ids (PostgreSQL)."""
    for table in tables:
        for column in table.primary_key.columns:
            sequence = conn.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            ).scalar_one_or_none()
            if sequence is None:
                continue
            highest = conn.execute(select(func.max(column))).scalar_one_or_none()
            conn.execute(
                text("SELECT setval(:sequence, :value, :called)"),
                {"sequence": sequence, "value": highest or 1, "called": highest is not None},
            )
