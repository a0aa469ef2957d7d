"""Backups (issue #21): a consistent snapshot under concurrent writes, restored on SQLite and
PostgreSQL (and across them); tampered, truncated, wrongly keyed files and non-empty targets
are refused with nothing written."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import create_engine, func, inspect, select, text, update
from sqlalchemy.engine import make_url

from envcat.core.keys import new_kms_key
from envcat.core.settings import Settings
from envcat.models import AuditEvent, Key, KeyVersion, db, migrate
from envcat.services import audit, backups, keys
from envcat.services.backup_crypto import (
    CHUNK_BYTES,
    MAGIC,
    BackupError,
    EncryptedWriter,
    Identity,
    KdfCost,
    Passphrase,
    Recipient,
    decode_key,
    generate_keypair,
    generate_signing_key,
)
from envcat.services.backup_records import record_line
from envcat.services.runtime import create_service_app
from tests.support.settings import POSTGRES_ADMIN_URL, make_settings
from tests.support.signed import add_member

CANARY = "canary-backup-value-5b1e0c"
CANARY_NAME = "CANARY_BACKUP_NAME_93AF"
TENANTS = ("t-alpha", "t-beta")
# Argon2id at a test cost; the default (MODERATE) is what the CLI uses.
FAST_KDF = KdfCost(opslimit=2, memlimit=8 * 1024 * 1024)


def _keypair() -> tuple[Recipient, Identity]:
    private, public = generate_keypair()
    return Recipient(decode_key(public, "public")), Identity(decode_key(private, "private"))


@contextlib.contextmanager
def _app(settings: Settings) -> Iterator[Flask]:
    migrate.upgrade(settings.database_url)
    app = create_service_app(settings)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def _add_key(tenant: str, name: str) -> str:
    key = keys.new_key(tenant, name, CANARY, is_secret=True, description="", author="u-writer")
    db.session.commit()
    audit.record(tenant, "u-writer", "key.created", f"key:{key.id}", details={"name": name})
    return key.id


def _populate(settings: Settings, events: int = 150) -> None:
    """Two tenants, keys with canary values, and enough audit rows for several frames."""
    with _app(settings):
        for tenant in TENANTS:
            add_member(f"u-{tenant}", tenant, "owner")
            _add_key(tenant, CANARY_NAME)
            for i in range(events):
                audit.record(
                    tenant, f"u-{tenant}", "bundle.exported", details={"n": i, "pad": "x" * 200}
                )


def _counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {
                model.__tablename__: conn.execute(
                    select(func.count()).select_from(model)
                ).scalar_one()
                for model in (Key, KeyVersion, AuditEvent)
            }
    finally:
        engine.dispose()


def _table_names(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


class _Writer(threading.Thread):
    """Keeps adding a key (with its first version) and an audit event, each committed."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.app = create_service_app(settings)
        self.done = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.progress = threading.Condition()

    def run(self) -> None:
        try:
            with self.app.app_context():
                while not self.stop.is_set():
                    _add_key(TENANTS[self.done % 2], f"LIVE_{self.done}")
                    with self.progress:
                        self.done += 1
                        self.progress.notify_all()
                db.session.remove()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def wait_for(self, count: int, timeout: float = 60) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: self.done >= count or self.error, timeout)
        assert self.error is None, self.error


class _PausingFile:
    """A backup file that, at its first write (after the manifest's counts were read in the
    snapshot, before any row), lets the writer commit `more` rows: what a non-snapshot dump
    would then pick up."""

    def __init__(self, path: Path, writer: _Writer, more: int) -> None:
        self.handle = path.open("wb")
        self.writer, self.more = writer, more
        self.paused_at: int | None = None

    def write(self, data: bytes) -> int:
        if self.paused_at is None:
            self.paused_at = self.writer.done
            self.writer.wait_for(self.paused_at + self.more)
        return self.handle.write(data)


def _backup_under_writes(
    settings: Settings, path: Path, target: Any
) -> tuple[backups.Manifest, int]:
    writer = _Writer(settings)
    writer.start()
    try:
        writer.wait_for(5)
        sink = _PausingFile(path, writer, more=8)
        manifest = backups.write_backup(settings.database_url, sink, target)  # type: ignore[arg-type]  # a pausing file double
        sink.handle.close()
        writer.wait_for(writer.done + 3)  # still writing after the backup
    finally:
        writer.stop.set()
        writer.join(30)
        with writer.app.app_context():
            db.engine.dispose()
    assert writer.error is None, writer.error
    assert sink.paused_at is not None
    return manifest, sink.paused_at


def _restored_and_checked(
    target_settings: Settings, path: Path, identity: Identity, manifest: backups.Manifest
) -> None:
    restored = backups.restore_backup(target_settings.database_url, path, identity)
    assert restored == manifest
    counts = _counts(target_settings.database_url)
    assert counts == {name: manifest.tables[name] for name in counts}
    # keys and their first versions are written together: a snapshot holds both or neither
    assert counts["keys"] == counts["key_versions"]
    with _app(target_settings):
        for tenant in TENANTS:
            report = audit.verify_chain(tenant)
            assert report.is_intact and report.events == manifest.audit_heads[tenant].events
        key = db.session.execute(select(Key).where(Key.name == CANARY_NAME)).scalars().first()
        assert key is not None and keys.decrypt(key) == CANARY
        # ids (and PostgreSQL sequences) continue after the restored rows
        _add_key(TENANTS[0], "AFTER_RESTORE")
        assert audit.verify_chain(TENANTS[0]).is_intact


@pytest.fixture
def other_postgres_url(postgres_url: str) -> Iterator[str]:
    """A second fresh PostgreSQL database beside `postgres_url`, dropped afterwards."""
    name = f"envcat_restore_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("into", ["same", "other"])
def test_round_trip_under_concurrent_writes_is_one_consistent_snapshot(
    database_url: str,
    redis_url: str,
    broker_url: str,
    tmp_path: Path,
    into: str,
    request: pytest.FixtureRequest,
) -> None:
    kms = new_kms_key()
    source = make_settings(database_url, redis_url, broker_url, bundle_kms_key=kms)
    _populate(source)
    recipient, identity = _keypair()
    path = tmp_path / "envcat.ecb"
    manifest, paused_at = _backup_under_writes(source, path, recipient)

    # The snapshot predates the pause: the rows written during it are not in the backup.
    live_keys = manifest.tables["keys"] - len(TENANTS)
    assert 5 <= live_keys <= paused_at + 1  # +1: a key committed, `done` not yet bumped
    # 8 written during the pause and 3 after it, less the +1 above
    assert _counts(database_url)["keys"] >= manifest.tables["keys"] + 8 + 3 - 1

    data = path.read_bytes()
    assert data.startswith(MAGIC) and len(data) > 2 * CHUNK_BYTES
    assert CANARY.encode() not in data and CANARY_NAME.encode() not in data

    is_sqlite = database_url.startswith("sqlite")
    if (into == "same") == is_sqlite:
        target_url = f"sqlite:///{tmp_path / 'restored.db'}"
    else:
        target_url = request.getfixturevalue("other_postgres_url")
    target = make_settings(target_url, redis_url, broker_url, bundle_kms_key=kms)
    _restored_and_checked(target, path, identity, manifest)


@pytest.fixture
def sqlite_source(redis_url: str, broker_url: str, tmp_path: Path) -> Settings:
    settings = make_settings(f"sqlite:///{tmp_path / 'source.db'}", redis_url, broker_url)
    _populate(settings)
    return settings


@pytest.fixture
def empty_target(sqlite_source: Settings, tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'target.db'}"
    return sqlite_source.model_copy(update={"database_url": url})


def _written(settings: Settings, path: Path, target: Recipient | Passphrase) -> backups.Manifest:
    with path.open("wb") as out:
        return backups.write_backup(settings.database_url, out, target)


def _assert_nothing_restored(target: Settings) -> None:
    tables = _table_names(target.database_url)
    if tables:
        assert all(count == 0 for count in _counts(target.database_url).values())


def test_passphrase_round_trip_and_wrong_passphrase(
    sqlite_source: Settings, empty_target: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "pass.ecb"
    manifest = _written(sqlite_source, path, Passphrase("correct horse battery", FAST_KDF))
    with pytest.raises(BackupError, match="wrong passphrase"):
        backups.restore_backup(
            empty_target.database_url, path, Identity(passphrase="correct horse")
        )
    _assert_nothing_restored(empty_target)
    with pytest.raises(BackupError, match="encrypted with a passphrase"):
        backups.read_backup(path, _keypair()[1])
    restored = backups.restore_backup(
        empty_target.database_url, path, Identity(passphrase="correct horse battery")
    )
    assert restored == manifest


def test_wrong_private_key_is_refused_and_named(
    sqlite_source: Settings, empty_target: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "sealed.ecb"
    recipient, _ = _keypair()
    _written(sqlite_source, path, recipient)
    with pytest.raises(BackupError, match="wrong key: this backup is sealed to backup key"):
        backups.restore_backup(empty_target.database_url, path, _keypair()[1])
    with pytest.raises(BackupError, match="pass its private key"):
        backups.restore_backup(empty_target.database_url, path, Identity(passphrase="guess"))
    _assert_nothing_restored(empty_target)
    assert _table_names(empty_target.database_url) == set()


def _frame_offsets(data: bytes) -> list[int]:
    """Start offsets of the frames (after the 14+1+8+80+1+24-byte header of an unsigned
    sealed file)."""
    offset = len(MAGIC) + 1 + 8 + 80 + 1 + 24
    starts = []
    while offset < len(data):
        starts.append(offset)
        offset += 4 + int.from_bytes(data[offset : offset + 4], "big")
    assert offset == len(data)
    return starts


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip_row_byte", "altered"),
        ("flip_header_key_id", "altered"),
        ("drop_final_frame", "truncated"),
        ("cut_mid_frame", "truncated"),
        ("cut_header", "truncated"),
        ("swap_frames", "altered"),
        ("append", "data after its final frame"),
        ("huge_length", "impossible length"),
        ("not_a_backup", "not an EnvCat backup"),
    ],
)
def test_damaged_files_are_refused_with_nothing_written(
    sqlite_source: Settings, empty_target: Settings, tmp_path: Path, damage: str, message: str
) -> None:
    recipient, identity = _keypair()
    good = tmp_path / "good.ecb"
    _written(sqlite_source, good, recipient)
    data = bytearray(good.read_bytes())
    frames = _frame_offsets(bytes(data))
    assert len(frames) >= 3
    if damage == "flip_row_byte":
        data[frames[1] + 100] ^= 0x01
    elif damage == "flip_header_key_id":
        data[len(MAGIC) + 1] ^= 0x01
    elif damage == "drop_final_frame":
        del data[frames[-1] :]
    elif damage == "cut_mid_frame":
        del data[frames[1] + 50 :]
    elif damage == "cut_header":
        del data[len(MAGIC) + 40 :]
    elif damage == "swap_frames":
        first = bytes(data[frames[0] : frames[1]])
        second = bytes(data[frames[1] : frames[2]])
        data[frames[0] : frames[2]] = second + first
    elif damage == "append":
        data += b"\x00\x00\x00\x11" + b"x" * 17
    elif damage == "huge_length":
        data[frames[1] : frames[1] + 4] = (2**31).to_bytes(4, "big")
    elif damage == "not_a_backup":
        data[:4] = b"PK\x03\x04"
    bad = tmp_path / "bad.ecb"
    bad.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=message):
        backups.restore_backup(empty_target.database_url, bad, identity)
    _assert_nothing_restored(empty_target)
    assert _table_names(empty_target.database_url) == set()


def test_restore_into_a_non_empty_database_is_refused_and_leaves_it_alone(
    sqlite_source: Settings, tmp_path: Path
) -> None:
    recipient, identity = _keypair()
    path = tmp_path / "full.ecb"
    _written(sqlite_source, path, recipient)
    before = _counts(sqlite_source.database_url)
    with pytest.raises(BackupError, match="not empty"):
        backups.restore_backup(sqlite_source.database_url, path, identity)
    assert _counts(sqlite_source.database_url) == before


def test_restore_into_a_migrated_but_empty_database(
    sqlite_source: Settings, empty_target: Settings, tmp_path: Path
) -> None:
    recipient, identity = _keypair()
    path = tmp_path / "b.ecb"
    manifest = _written(sqlite_source, path, recipient)
    migrate.upgrade(empty_target.database_url)
    assert backups.restore_backup(empty_target.database_url, path, identity) == manifest
    assert _counts(empty_target.database_url) == _counts(sqlite_source.database_url)


def test_a_forged_audit_chain_inside_a_valid_backup_is_refused(
    sqlite_source: Settings, empty_target: Settings, tmp_path: Path
) -> None:
    """Someone with the database (not the backup key) edits an audit row, then a backup is
    taken: the file is authentic, but its chain is not, and restore says so."""
    engine = create_engine(sqlite_source.database_url)
    with engine.begin() as conn:
        conn.execute(update(AuditEvent).where(AuditEvent.id == 3).values(actor="someone-else"))
    engine.dispose()
    recipient, identity = _keypair()
    path = tmp_path / "forged.ecb"
    _written(sqlite_source, path, recipient)
    with pytest.raises(BackupError, match="audit chain in the backup is broken"):
        backups.restore_backup(empty_target.database_url, path, identity)
    _assert_nothing_restored(empty_target)


def test_backup_of_a_database_without_schema_is_refused(tmp_path: Path) -> None:
    recipient, _ = _keypair()
    with (tmp_path / "x.ecb").open("wb") as out, pytest.raises(BackupError, match="init-db"):
        backups.write_backup(f"sqlite:///{tmp_path / 'none.db'}", out, recipient)


def test_a_header_asking_for_a_huge_argon2_cost_is_refused_before_deriving(
    sqlite_source: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "p.ecb"
    _written(sqlite_source, path, Passphrase("pw", FAST_KDF))
    data = bytearray(path.read_bytes())
    limits_at = len(MAGIC) + 1 + 16
    data[limits_at + 8 : limits_at + 16] = (2**40).to_bytes(8, "big")  # a terabyte of memory
    path.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="unreasonable Argon2id cost"):
        backups.read_backup(path, Identity(passphrase="pw"))


@pytest.mark.parametrize(
    "rows",
    [
        [[{"$dt": "yesterday"}]],  # not a time
        [[{"$dec": "1,5"}]],  # not a number
        [[{"$what": 1}]],  # unknown tag
        [[1, 2, 3]],  # more values than columns
    ],
)
def test_authentic_but_malformed_contents_are_refused_with_nothing_written(
    sqlite_source: Settings, empty_target: Settings, tmp_path: Path, rows: list[list[object]]
) -> None:
    """Only a holder of the backup key can write such a file: still one clear error."""
    recipient, identity = _keypair()
    good = tmp_path / "good.ecb"
    manifest = _written(sqlite_source, good, recipient)
    path = tmp_path / "odd.ecb"
    with path.open("wb") as out:
        writer = EncryptedWriter(out, recipient)
        writer.write(record_line({"manifest": manifest.model_dump(mode="json")}))
        writer.write(record_line({"table": "webhook_events", "columns": ["received_at"]}))
        writer.write(record_line({"rows": rows}))
        writer.write(record_line({"end": True}))
        writer.close()
    with pytest.raises(BackupError, match="malformed"):
        backups.restore_backup(empty_target.database_url, path, identity)
    assert _table_names(empty_target.database_url) == set()


def _signing_key() -> tuple[bytes, bytes]:
    seed, public = generate_signing_key()
    return decode_key(seed, "seed"), decode_key(public, "public")


def test_a_backup_forged_with_the_public_key_is_refused_when_a_signature_is_required(
    sqlite_source: Settings,
    empty_target: Settings,
    redis_url: str,
    broker_url: str,
    tmp_path: Path,
) -> None:
    """BACKUP_PUBLIC_KEY is not a secret: anyone who can write to the backup storage can plant
    a file sealed to it, holding their own membership. `signed_by` refuses it."""
    recipient, identity = _keypair()
    seed, public = _signing_key()
    genuine = tmp_path / "genuine.ecb"
    with genuine.open("wb") as out:
        backups.write_backup(sqlite_source.database_url, out, recipient, seed)

    attacker = make_settings(f"sqlite:///{tmp_path / 'attacker.db'}", redis_url, broker_url)
    with _app(attacker):
        add_member("u-attacker", TENANTS[0], "owner")
    forged = tmp_path / "forged.ecb"
    _written(attacker, forged, recipient)
    backups.read_backup(forged, identity)  # without a required signer it would be accepted

    required = Identity(identity.private_key, None, public)
    with pytest.raises(BackupError, match="not signed, and a signature was required"):
        backups.restore_backup(empty_target.database_url, forged, required)
    attacker_seed, _ = _signing_key()
    self_signed = tmp_path / "self-signed.ecb"
    with self_signed.open("wb") as out:
        backups.write_backup(attacker.database_url, out, recipient, attacker_seed)
    with pytest.raises(BackupError, match=r"the backup is signed by key \w+, not by"):
        backups.restore_backup(empty_target.database_url, self_signed, required)
    assert _table_names(empty_target.database_url) == set()

    assert backups.restore_backup(empty_target.database_url, genuine, required).tables["keys"]


@pytest.mark.parametrize(
    ("damage", "message", "message_when_required"),
    [
        ("flip_signature", "signature does not verify", "signature does not verify"),
        ("cut_signature", "signature is missing", "signature is missing"),
        # made to look unsigned: the header no longer matches the frames; and not signed
        ("strip_signature", "altered", "not signed, and a signature was required"),
        ("append", "data after its final frame", "data after its final frame"),
    ],
)
def test_a_damaged_or_stripped_signature_is_refused(
    sqlite_source: Settings,
    empty_target: Settings,
    tmp_path: Path,
    damage: str,
    message: str,
    message_when_required: str,
) -> None:
    recipient, identity = _keypair()
    seed, public = _signing_key()
    path = tmp_path / "signed.ecb"
    with path.open("wb") as out:
        backups.write_backup(sqlite_source.database_url, out, recipient, seed)
    data = bytearray(path.read_bytes())
    flag_at = len(MAGIC) + 1 + 8 + 80
    assert data[flag_at] == 1 and bytes(data[flag_at + 1 : flag_at + 33]) == public
    if damage == "flip_signature":
        data[-1] ^= 0x01
    elif damage == "cut_signature":
        del data[-10:]
    elif damage == "strip_signature":  # make it look unsigned
        data[flag_at] = 0
        del data[flag_at + 1 : flag_at + 33]
        del data[-64:]
    elif damage == "append":
        data += b"\x00"
    path.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=message):
        backups.restore_backup(empty_target.database_url, path, identity)
    required = Identity(identity.private_key, None, public)
    with pytest.raises(BackupError, match=message_when_required):
        backups.restore_backup(empty_target.database_url, path, required)
    assert _table_names(empty_target.database_url) == set()


def test_a_backup_of_an_older_schema_restores_and_is_migrated(
    redis_url: str, broker_url: str, tmp_path: Path
) -> None:
    """A backup records its schema revision: restore builds that schema, loads the rows,
    then runs the newer migrations over them."""
    source = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(source, "0003")
    engine = create_engine(source)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, kind, slug, created_at, updated_at) "
                "VALUES ('t-old', 'Old', 'org', 'old', '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    recipient, identity = _keypair()
    path = tmp_path / "old.ecb"
    with path.open("wb") as out:
        manifest = backups.write_backup(source, out, recipient)
    assert manifest.schema_revision == "0003" and "key_versions" not in manifest.tables

    target = f"sqlite:///{tmp_path / 'new.db'}"
    backups.restore_backup(target, path, identity)
    assert "key_versions" in _table_names(target)
    engine = create_engine(target)
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(migrate.alembic_config(target)).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
        assert conn.execute(text("SELECT slug FROM tenants")).scalar_one() == "old"
    engine.dispose()


def test_schema_revisions_that_do_not_fit_are_refused(
    sqlite_source: Settings, empty_target: Settings, tmp_path: Path
) -> None:
    recipient, identity = _keypair()
    path = tmp_path / "b.ecb"
    manifest = _written(sqlite_source, path, recipient)
    migrate.upgrade(empty_target.database_url, "0003")  # empty, but at another revision
    with pytest.raises(BackupError, match="schema is at revision 0003, the backup's at"):
        backups.restore_backup(empty_target.database_url, path, identity)

    future = tmp_path / "future.ecb"
    newer = manifest.model_copy(
        update={"schema_revision": "9999_from_the_future", "tables": {}, "audit_heads": {}}
    )
    with future.open("wb") as out:
        writer = EncryptedWriter(out, recipient)
        writer.write(record_line({"manifest": newer.model_dump(mode="json")}))
        writer.write(record_line({"end": True}))
        writer.close()
    fresh = tmp_path / "fresh.db"
    with pytest.raises(BackupError, match="newer than this EnvCat knows"):
        backups.restore_backup(f"sqlite:///{fresh}", future, identity)
