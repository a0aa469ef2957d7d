"""The plaintext inside a backup: JSON lines, checked as they are read (no database here).

    {"manifest": {...}}                      first: what the backup holds
    {"table": "tenants", "columns": [...]}   then, per table in foreign-key order,
    {"rows": [[...], ...]}                   its rows in batches
    {"end": true}                            last

Values that JSON cannot hold are tagged: {"$dt": iso} (UTC), {"$date": iso},
{"$b64": base64}, {"$dec": text}, {"$json": value} (JSON columns). `read_backup`
recomputes row counts and every tenant's audit chain while it reads and compares
them with the manifest.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ValidationError

from envcat.services import audit
from envcat.services.backup_crypto import BackupError, Identity, decrypt_chunks

FORMAT_VERSION = 1
AUDIT_TABLE = "audit_events"


class AuditHead(BaseModel):
    """One tenant's audit chain at the snapshot: how many events, and the last hash."""

    events: int
    head: str


class Manifest(BaseModel):
    """What a backup holds; encrypted and authenticated with the rows."""

    format: int
    envcat_version: str
    created_at: datetime
    dialect: str
    schema_revision: str
    tables: dict[str, int]
    audit_heads: dict[str, AuditHead]


@dataclass(frozen=True)
class _AuditRow:
    tenant_id: str
    actor: str
    action: str
    target: str
    ip: str | None
    user_agent: str | None
    details: dict[str, Any]


def encode_value(value: object) -> object:
    """A JSON-able form of a column value (tagged when JSON has no such type)."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return {"$dt": aware.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, dict | list):
        return {"$json": value}
    raise BackupError(f"cannot back up a value of type {type(value).__name__}")


def decode_value(value: object, naive_datetimes: bool) -> object:
    """The Python value of an encoded one (KeyError, TypeError, ValueError or
    ArithmeticError when malformed)."""
    if not isinstance(value, dict):
        return value
    ((tag, inner),) = value.items()
    if tag == "$dt":
        moment = datetime.fromisoformat(inner).astimezone(UTC)
        # SQLite keeps naive UTC text (what the ORM writes there).
        return moment.replace(tzinfo=None) if naive_datetimes else moment
    decoders: dict[str, Any] = {
        "$date": date.fromisoformat,
        "$b64": base64.b64decode,
        "$dec": Decimal,
        "$json": lambda x: x,
    }
    return decoders[tag](inner)


def record_line(record: dict[str, object]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


@dataclass
class Section:
    """A batch of one table's rows (none for the record that opens the table)."""

    name: str
    columns: list[str]
    rows: list[list[object]]


def _records(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                raise BackupError("the backup's contents are not readable") from None
            if not isinstance(record, dict):
                raise BackupError("the backup's contents are not readable")
            yield record
    if pending:
        raise BackupError("the backup's contents end in the middle of a record")


def sections(source: BinaryIO, identity: Identity) -> Iterator[Manifest | Section]:
    """The manifest, then one Section per batch of rows; raises on anything malformed."""
    records = _records(decrypt_chunks(source, identity))
    first = next(records, None)
    if first is None or "manifest" not in first:
        raise BackupError("the backup has no manifest")
    try:
        manifest = Manifest.model_validate(first["manifest"])
    except ValidationError:
        raise BackupError("the backup's manifest is not readable") from None
    if manifest.format != FORMAT_VERSION:
        raise BackupError(f"backup format {manifest.format} is not supported by this EnvCat")
    yield manifest
    current: tuple[str, list[str]] | None = None
    ended = False
    for record in records:
        if ended:
            raise BackupError("the backup has records after its end")
        if "table" in record and isinstance(record.get("columns"), list):
            current = (str(record["table"]), [str(c) for c in record["columns"]])
            yield Section(current[0], current[1], [])
        elif isinstance(record.get("rows"), list) and current is not None:
            rows = record["rows"]
            if not all(isinstance(row, list) and len(row) == len(current[1]) for row in rows):
                raise BackupError(f"table {current[0]}: a row in the backup is malformed")
            yield Section(current[0], current[1], rows)
        elif record.get("end") is True:
            ended = True
        else:
            raise BackupError("the backup holds a record this EnvCat does not know")
    if not ended:
        raise BackupError("the backup is incomplete (no end record)")


class Tally:
    """Row counts and audit chains recomputed while a backup is read."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.heads: dict[str, str] = {}
        self.events: dict[str, int] = {}

    def add(self, section: Section) -> None:
        """Count the rows, check each value decodes, follow the audit chains."""
        self.counts[section.name] = self.counts.get(section.name, 0) + len(section.rows)
        for row in section.rows:
            for value in row:
                decode_value(value, naive_datetimes=False)
            if section.name == AUDIT_TABLE:
                self._chain(dict(zip(section.columns, row, strict=True)))

    def _chain(self, fields: dict[str, Any]) -> None:
        tenant = str(fields["tenant_id"])
        prev = self.heads.get(tenant, audit.GENESIS)
        at = decode_value(fields["at"], naive_datetimes=False)
        details = decode_value(fields["details"], naive_datetimes=False)
        event = _AuditRow(
            tenant_id=tenant,
            actor=fields["actor"],
            action=fields["action"],
            target=fields["target"],
            ip=fields["ip"],
            user_agent=fields["user_agent"],
            details=details if isinstance(details, dict) else {},
        )
        if not isinstance(at, datetime) or fields["prev_hash"] != prev:
            raise BackupError(f"tenant {tenant}: the audit chain in the backup is broken")
        if audit.chain_hash(prev, event, at) != fields["hash"]:
            raise BackupError(f"tenant {tenant}: the audit chain in the backup is broken")
        self.heads[tenant] = str(fields["hash"])
        self.events[tenant] = self.events.get(tenant, 0) + 1

    def check(self, manifest: Manifest) -> None:
        """BackupError unless what was read is exactly what the manifest announces."""
        counts = {name: self.counts.get(name, 0) for name in manifest.tables}
        if counts != manifest.tables or set(self.counts) - set(manifest.tables):
            raise BackupError("the backup's row counts differ from its manifest")
        heads = {t: AuditHead(events=self.events[t], head=h) for t, h in self.heads.items()}
        if heads != manifest.audit_heads:
            raise BackupError("the backup's audit chain heads differ from its manifest")


def read_backup(path: Path, identity: Identity) -> Manifest:
    """Check a backup end to end (no database touched); return its manifest."""
    tally = Tally()
    manifest: Manifest | None = None
    with path.open("rb") as source:
        for item in sections(source, identity):
            if isinstance(item, Manifest):
                manifest = item
                continue
            try:
                tally.add(item)
            except (KeyError, TypeError, ValueError, ArithmeticError):
                # authentic but not what EnvCat writes: a bug, or another writer with the key
                raise BackupError(f"table {item.name}: the backup's rows are malformed") from None
    assert manifest is not None  # noqa: S101  # sections() yields it first or raises
    tally.check(manifest)
    return manifest
