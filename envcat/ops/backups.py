"""What `envcat server backup`, `restore` and `backup-keygen` do (docs/operations.md).

The format and the database work live in envcat.services.backups; this module
handles files (0600 from creation, atomic replace), keys and one-line errors.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.exc import SQLAlchemyError

from envcat.core.kms import Keyring
from envcat.core.settings import Settings
from envcat.ops import maintenance
from envcat.ops.config import PRIVATE_FILE_MODE, OpsError, write_private_file
from envcat.services import backups
from envcat.services.backup_crypto import (
    BackupError,
    Identity,
    Passphrase,
    Recipient,
    backup_signer,
    decode_key,
    generate_keypair,
    generate_signing_key,
    key_id,
    public_key_of,
    signing_public_key,
)
from envcat.services.backup_records import read_backup

Echo = Callable[[str], None]
_KEY_FILE_HEADER = (
    "# EnvCat backup private key: it opens every backup encrypted to\n"
    "# BACKUP_PUBLIC_KEY={public}\n"
    "# Keep it off the servers that write backups, and offline if you can.\n"
)


def _fail(exc: BackupError) -> OpsError:
    return OpsError(f"envcat: {exc}")


def _database_error(exc: SQLAlchemyError) -> OpsError:
    # The type only: the text may quote SQL parameters.
    return OpsError(
        f"envcat: database error ({type(exc).__name__}); is DATABASE_URL right and reachable?"
    )


def keygen(path: Path) -> str:
    """Write a new backup private key to `path` (mode 0600, never overwritten); return
    the public key."""
    if path.exists():
        raise OpsError(f"envcat: {path} exists; not overwriting a backup key")
    private, public = generate_keypair()
    write_private_file(path, _KEY_FILE_HEADER.format(public=public) + private + "\n")
    return public


def read_identity_file(path: Path) -> bytes:
    """The raw private key in a key file written by `keygen` (comments ignored)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OpsError(f"envcat: cannot read the backup key {path}: {type(exc).__name__}") from None
    body = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if len(body) != 1:
        raise OpsError(f"envcat: {path} is not a backup private key file")
    try:
        public_key_of(body[0])
        return decode_key(body[0], "the backup private key")
    except BackupError as exc:
        raise _fail(exc) from None


def target_for(
    settings: Settings, to: str | None, passphrase: str | None
) -> Recipient | Passphrase:
    """Where a backup is encrypted to: --to, else BACKUP_PUBLIC_KEY, or a passphrase."""
    if passphrase is not None:
        if to is not None:
            raise OpsError("envcat: give either --to or a passphrase, not both")
        return Passphrase(passphrase)
    public = to or settings.backup_public_key
    if public is None:
        raise OpsError(
            "envcat: no backup key: set BACKUP_PUBLIC_KEY (envcat server backup-keygen), "
            "or pass --to KEY or --passphrase"
        )
    try:
        return Recipient(decode_key(public, "the backup public key"))
    except BackupError as exc:
        raise _fail(exc) from None


@contextlib.contextmanager
def _output(out: Path) -> Iterator[BinaryIO]:
    """`out` written through a 0600 temporary file renamed into place on success only."""
    if str(out) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    temporary = out.with_name(f".{out.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def signing_seed(settings: Settings) -> bytes | None:
    """The Ed25519 seed of BACKUP_SIGNING_KEY, if set."""
    if settings.backup_signing_key is None:
        return None
    return decode_key(settings.backup_signing_key.get_secret_value(), "BACKUP_SIGNING_KEY")


def backup(settings: Settings, out: Path, target: Recipient | Passphrase) -> backups.Manifest:
    """Write an encrypted snapshot of the database to `out` (or stdout for `-`), signed
    when BACKUP_SIGNING_KEY is set."""
    try:
        with _output(out) as handle:
            return backups.write_backup(
                settings.database_url, handle, target, signing_seed(settings)
            )
    except BackupError as exc:
        raise _fail(exc) from None
    except SQLAlchemyError as exc:
        raise _database_error(exc) from None
    except OSError as exc:
        raise OpsError(f"envcat: cannot write {out}: {exc.strerror}") from None


def describe_target(target: Recipient | Passphrase, settings: Settings) -> str:
    """How a backup is encrypted and signed, for the operator (never a key or passphrase)."""
    encrypted = (
        f"backup key {key_id(target.public_key)}"
        if isinstance(target, Recipient)
        else "a passphrase (Argon2id)"
    )
    seed = signing_seed(settings)
    if seed is None:
        return f"{encrypted}, unsigned"
    return f"{encrypted}, signed by {key_id(signing_public_key(seed))}"


def signing_keygen() -> tuple[str, str]:
    """A new backup signing key: (seed for BACKUP_SIGNING_KEY, public key for --signed-by)."""
    return generate_signing_key()


def public_key_argument(text: str, what: str) -> bytes:
    """A 32-byte key given on the command line; OpsError naming `what` otherwise."""
    try:
        return decode_key(text, what)
    except BackupError as exc:
        raise _fail(exc) from None


def verify(path: Path, identity: Identity) -> tuple[backups.Manifest, bytes | None]:
    """Check a backup end to end without a database: (its manifest, its signer if signed)."""
    if not path.is_file():
        raise OpsError(f"envcat: {path} is not a file")
    try:
        return read_backup(path, identity), backup_signer(path)
    except BackupError as exc:
        raise _fail(exc) from None


@dataclass(frozen=True)
class Restored:
    """What a restore put back, and what the checks afterwards found."""

    manifest: backups.Manifest
    audit: maintenance.AuditSummary
    undecryptable: int
    signer: bytes | None


def restore(settings: Settings, path: Path, identity: Identity) -> Restored:
    """Verify `path`, load it into the empty database, then run the verify-audit checks."""
    if not path.is_file():
        raise OpsError(f"envcat: {path} is not a file")
    try:
        signer = backup_signer(path)
        manifest = backups.restore_backup(settings.database_url, path, identity)
    except BackupError as exc:
        raise _fail(exc) from None
    except SQLAlchemyError as exc:
        raise _database_error(exc) from None
    summary = maintenance.verify_audit(settings)
    if summary.broken:
        first = summary.broken[0]
        raise OpsError(
            f"envcat: restored, but the audit chain of tenant {first.tenant_id} does not verify "
            f"(event {first.broken_at})"
        )
    keyring = Keyring.from_setting(settings.kms_key_value())
    used = backups.keyring_ids_in_use(settings.database_url)
    undecryptable = sum(count for kid, count in used.items() if kid not in keyring.keys)
    return Restored(manifest, summary, undecryptable, signer)
