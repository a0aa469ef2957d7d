"""`envcat server backup`, `restore`, `verify-backup` and the key generators (issue #21).

Registered on the `server` group by envcat.ops.commands; the work is in
envcat.ops.backups, imported only when a command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from envcat.ops.config import (
    OpsError,
    data_dir_option,
    load_backup_settings,
    load_server_settings,
)
from envcat.services.backup_crypto import Identity, key_id


def _echo(text: str) -> None:
    click.echo(text, err=True)


def _read_passphrase(from_stdin: bool, *, confirm: bool) -> str:
    if not from_stdin:
        prompt = click.prompt("Backup passphrase", hide_input=True, err=True)
        if confirm and click.prompt("Repeat it", hide_input=True, err=True) != prompt:
            raise OpsError("envcat: the two passphrases differ")
        return str(prompt)
    passphrase = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not passphrase:
        raise OpsError("envcat: no passphrase on stdin")
    return passphrase


@click.command("backup-keygen")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (mode 0600; never overwritten).",
)
def backup_keygen(out: Path) -> None:
    """Make a backup key pair: the private key goes to --out, the public key to stdout.

    Give the public key to the servers as BACKUP_PUBLIC_KEY; keep the private
    key elsewhere (offline if you can): it is what `restore --identity` needs.
    """
    from envcat.ops import backups

    public = backups.keygen(out)
    click.echo(f"BACKUP_PUBLIC_KEY={public}")
    _echo(f"Wrote the backup private key to {out} (mode 0600). Keep it off the servers.")


@click.command("backup-signing-keygen")
def backup_signing_keygen() -> None:
    """Make a backup signing key: BACKUP_SIGNING_KEY=… on stdout, its public key on stderr.

    Put BACKUP_SIGNING_KEY only on the host that writes backups; restore with
    --signed-by PUBLIC_KEY to refuse any file it did not sign (anyone who knows
    BACKUP_PUBLIC_KEY can encrypt a file to it).

    \b
    Example:
      (umask 077; envcat server backup-signing-keygen >> backup-host.env)
    """
    from envcat.ops import backups

    seed, public = backups.signing_keygen()
    click.echo(f"BACKUP_SIGNING_KEY={seed}")
    _echo(f"Restore with: envcat server restore FILE --signed-by {public}")


@click.command("backup")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The backup file to write (`-` for stdout); replaced only once complete.",
)
@click.option(
    "--to",
    "to",
    metavar="PUBLIC_KEY",
    help="Encrypt to this backup public key [default: BACKUP_PUBLIC_KEY].",
)
@click.option("--passphrase", is_flag=True, help="Encrypt with a passphrase asked on the terminal.")
@click.option("--passphrase-stdin", is_flag=True, help="Read the passphrase from stdin.")
@data_dir_option
def backup(
    out: Path, to: str | None, passphrase: bool, passphrase_stdin: bool, data_dir: Path
) -> None:
    """Write an encrypted, consistent snapshot of the whole database.

    Every table is read in one snapshot while the server keeps running, and
    streamed encrypted to a backup public key (X25519 sealed box) or under a
    passphrase (Argon2id). Values stay encrypted under BUNDLE_KMS_KEY inside it,
    so a restore also needs that keyring; this command does not.

    \b
    Example:
      envcat server backup --out /backups/envcat-$(date -u +%Y%m%dT%H%M%SZ).ecb
    """
    settings = load_backup_settings(data_dir)
    from envcat.ops import backups

    secret = None
    if passphrase or passphrase_stdin:
        secret = _read_passphrase(passphrase_stdin, confirm=True)
    target = backups.target_for(settings, to, secret)
    manifest = backups.backup(settings, out, target)
    rows = sum(manifest.tables.values())
    _echo(
        f"Backed up {rows} rows in {len(manifest.tables)} tables (schema "
        f"{manifest.schema_revision}, {len(manifest.audit_heads)} audit chain(s)) to {out}, "
        f"encrypted to {backups.describe_target(target, settings)}."
    )


F = TypeVar("F", bound=Callable[..., object])


def _opening_options(function: F) -> F:
    """--identity, --passphrase, --passphrase-stdin and --signed-by: what opens a backup."""
    options = (
        click.option(
            "--signed-by",
            metavar="PUBLIC_KEY",
            help="Refuse the file unless signed by this key (from backup-signing-keygen).",
        ),
        click.option("--passphrase-stdin", is_flag=True, help="Read the passphrase from stdin."),
        click.option("--passphrase", is_flag=True, help="Ask for the backup's passphrase."),
        click.option(
            "--identity",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The backup private key file (from backup-keygen).",
        ),
    )
    for option in options:
        function = option(function)
    return function


def _identity(
    identity: Path | None, passphrase: bool, passphrase_stdin: bool, signed_by: str | None
) -> Identity:
    from envcat.ops import backups

    key = backups.read_identity_file(identity) if identity is not None else None
    signer = None
    if signed_by is not None:
        signer = backups.public_key_argument(signed_by, "--signed-by")
    secret = None
    if passphrase or passphrase_stdin:
        secret = _read_passphrase(passphrase_stdin, confirm=False)
    return Identity(key, secret, signer)


def _say_who_signed(opened: Identity, signer: bytes | None) -> None:
    if opened.signed_by is not None:
        _echo(f"Signature verified: signed by {key_id(opened.signed_by)}.")
    elif signer is not None:
        _echo(
            f"Signed by {key_id(signer)} (consistent, but not required: pass "
            "--signed-by to refuse files anyone else wrote)."
        )
    elif opened.passphrase is None:
        _echo("The backup is not signed: anyone who knows BACKUP_PUBLIC_KEY could have made it.")


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_opening_options
@data_dir_option
def restore(
    file: Path,
    identity: Path | None,
    passphrase: bool,
    passphrase_stdin: bool,
    signed_by: str | None,
    data_dir: Path,
) -> None:
    """Verify a backup and restore it into an EMPTY database.

    The whole file is checked first (authenticity, completeness, row counts and
    audit chains against its manifest); only then are the rows loaded, in one
    transaction, and the schema migrated to this version. A non-empty database,
    a wrong key and a damaged or truncated file are refused with nothing written.
    Run it with the BUNDLE_KMS_KEY of the server that was backed up.
    """
    settings = load_server_settings(data_dir)
    from envcat.ops import backups

    opened = _identity(identity, passphrase, passphrase_stdin, signed_by)
    result = backups.restore(settings, file, opened)
    manifest = result.manifest
    _say_who_signed(opened, result.signer)
    _echo(
        f"Restored {sum(manifest.tables.values())} rows (backup of "
        f"{manifest.created_at.isoformat(timespec='seconds')}, schema {manifest.schema_revision})."
    )
    _echo(
        f"Audit log intact: {result.audit.events} events in {len(result.audit.reports)} tenant(s)."
    )
    if result.undecryptable:
        raise OpsError(
            f"envcat: restored, but {result.undecryptable} stored value(s) are encrypted under "
            "keys missing from BUNDLE_KMS_KEY: set the keyring of the server that was backed up"
        )


@click.command("verify-backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_opening_options
def verify_backup(
    file: Path,
    identity: Path | None,
    passphrase: bool,
    passphrase_stdin: bool,
    signed_by: str | None,
) -> None:
    """Check a backup end to end without restoring it; print its manifest as JSON.

    The same checks restore makes before writing (authenticity, completeness,
    signature, row counts and audit chains against the manifest), with no
    database at all: run it on each night's file, exit 1 if it is not good.
    """
    from envcat.ops import backups

    opened = _identity(identity, passphrase, passphrase_stdin, signed_by)
    manifest, signer = backups.verify(file, opened)
    _say_who_signed(opened, signer)
    click.echo(manifest.model_dump_json(indent=2))
    _echo(
        f"Backup intact: {sum(manifest.tables.values())} rows, "
        f"{len(manifest.audit_heads)} audit chain(s), taken "
        f"{manifest.created_at.isoformat(timespec='seconds')} (schema {manifest.schema_revision})."
    )


BACKUP_COMMANDS = (backup_keygen, backup_signing_keygen, backup, restore, verify_backup)
