"""Backup and restore time (issue #21), each beside the bare tool measured in the same run.

Seeds a database with KEYS keys (each with its first version) and EVENTS audit events
spread over 10 tenants (a valid hash chain, bulk-inserted), then times:

- `envcat server backup`'s work (`backups.write_backup`, sealed to a fresh key)
  against the bare copy: SQLite's online backup API (`sqlite3.Connection.backup`), or
  `pg_dump -Fc` with `--postgres`;
- `backups.restore_backup` into an empty database (whole-file check, one transaction,
  migrations, counts and chains re-checked) against `sqlite3` restoring that copy with
  the backup API, or `pg_restore` into an empty database;
- `backups.read_backup` alone (decrypt, parse, recompute the audit chains).

    python bench/backup.py [--keys 5000] [--events 50000] [--runs 3] [--postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from envcat.core.keys import new_kms_key
from envcat.core.kms import Keyring
from envcat.models import AuditEvent, Key, KeyVersion, Tenant, migrate, new_uuid
from envcat.services import audit, backups
from envcat.services.backup_crypto import Identity, Recipient, decode_key, generate_keypair
from tests.hardening.databases import temporary_postgres

TENANTS = 10


def _seed(database_url: str, keys: int, events: int) -> None:
    migrate.upgrade(database_url)
    keyring = Keyring.from_setting(new_kms_key())
    engine = create_engine(database_url)
    tenants = [f"t-bench-{i}" for i in range(TENANTS)]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(Tenant), [{"id": t, "name": t, "kind": "org", "slug": t} for t in tenants]
        )
        key_rows, version_rows = [], []
        for i in range(keys):
            tenant, key_id = tenants[i % TENANTS], new_uuid()
            value = keyring.encrypt(f"value-{i}", tenant_id=tenant, key_id=key_id)
            key_rows.append({"id": key_id, "tenant_id": tenant, "name": f"KEY_{i}", "value": value})
            version_rows.append(
                {"key_id": key_id, "tenant_id": tenant, "version": 1, "value": value, "size": 9}
            )
        conn.execute(insert(Key), key_rows)
        conn.execute(insert(KeyVersion), version_rows)
        heads = dict.fromkeys(tenants, audit.GENESIS)
        rows = []
        for i in range(events):
            tenant = tenants[i % TENANTS]
            at = now + timedelta(microseconds=i)
            row = {
                "tenant_id": tenant,
                "actor": "u-bench",
                "action": "bundle.exported",
                "target": f"bundle:{i}",
                "ip": "203.0.113.7",
                "user_agent": "bench",
                "details": {"n": i, "keys": ["A", "B", "C"]},
            }
            row["hash"] = audit.chain_hash(heads[tenant], _Fields(row), at)
            row.update(at=at, prev_hash=heads[tenant])
            heads[tenant] = row["hash"]
            rows.append(row)
        for start in range(0, len(rows), 5000):
            conn.execute(insert(AuditEvent), rows[start : start + 5000])
    engine.dispose()


class _Fields:
    """A dict seen through attributes (what audit.chain_hash reads)."""

    def __init__(self, row: dict[str, object]) -> None:
        self.__dict__.update(row)


def _timed(action: Callable[[], object], runs: int, reset: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        reset()
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@contextlib.contextmanager
def _databases(postgres: bool, directory: Path) -> Iterator[tuple[str, Callable[[], str]]]:
    """The source URL, and a maker of fresh empty target URLs."""
    if not postgres:
        counter = iter(range(10_000))
        yield (
            f"sqlite:///{directory / 'source.db'}",
            lambda: f"sqlite:///{directory / f'target-{next(counter)}.db'}",
        )
        return
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(temporary_postgres())
        yield source, lambda: stack.enter_context(temporary_postgres())


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="envcat-bench-backup-"))
    private, public = generate_keypair()
    recipient = Recipient(decode_key(public, "public"))
    identity = Identity(decode_key(private, "private"))
    out, bare = directory / "envcat.ecb", directory / "bare.copy"
    try:
        with _databases(args.postgres, directory) as (source, fresh):
            _seed(source, args.keys, args.events)
            rows = args.keys * 2 + args.events + TENANTS

            def envcat_backup() -> None:
                with out.open("wb") as handle:
                    backups.write_backup(source, handle, recipient)

            def bare_backup() -> None:
                if args.postgres:
                    subprocess.run(["pg_dump", "-Fc", "-f", str(bare), _libpq(source)], check=True)
                    return
                with sqlite3.connect(make_url(source).database or "") as src:
                    dst = sqlite3.connect(bare)
                    src.backup(dst)
                    dst.close()

            def nothing() -> None:
                bare.unlink(missing_ok=True)

            ours = _timed(envcat_backup, args.runs, lambda: None)
            floor = _timed(bare_backup, args.runs, nothing)
            tool = "pg_dump -Fc" if args.postgres else "sqlite3 backup API"
            print(f"database: {'PostgreSQL' if args.postgres else 'SQLite'}, {rows:,} rows")
            print(
                f"backup   envcat {ours:7.2f} s  ({out.stat().st_size / 1e6:6.1f} MB)   "
                f"bare {tool} {floor:7.2f} s  ({bare.stat().st_size / 1e6:6.1f} MB)   "
                f"x{ours / floor:.1f}"
            )

            targets: list[str] = []

            def new_target() -> None:
                targets.append(fresh())

            def envcat_restore() -> None:
                backups.restore_backup(targets[-1], out, identity)

            def bare_restore() -> None:
                if args.postgres:
                    subprocess.run(
                        ["pg_restore", "--no-owner", "-d", _libpq(targets[-1]), str(bare)],
                        check=True,
                    )
                    return
                with sqlite3.connect(bare) as src:
                    dst = sqlite3.connect(make_url(targets[-1]).database or "")
                    src.backup(dst)
                    dst.close()

            ours = _timed(envcat_restore, args.runs, new_target)
            floor = _timed(bare_restore, args.runs, new_target)
            tool = "pg_restore" if args.postgres else "sqlite3 backup API"
            print(
                f"restore  envcat {ours:7.2f} s                 bare {tool} {floor:7.2f} s"
                f"                x{ours / floor:.1f}"
            )
            check = _timed(lambda: backups.read_backup(out, identity), args.runs, lambda: None)
            print(f"verify   envcat read_backup (decrypt, parse, recompute chains) {check:.2f} s")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
