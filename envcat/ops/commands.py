"""`envcat server …`: run and administer an EnvCat server (DESIGN §8).

The CLI's main group loads this module lazily; each command imports the heavy
server modules (Flask, SQLAlchemy, Celery) only when it runs, so `--help` and
`gen-keys` stay quick.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from envcat.ops.config import (
    DEFAULT_DATA_DIR,
    SECRETS_FILE,
    OpsError,
    generate_secrets,
    load_backup_settings,
    load_server_settings,
)

F = TypeVar("F", bound=Callable[..., object])
_PORT = click.IntRange(1, 65535)


def data_dir_option(function: F) -> F:
    """--data-dir: where `up` keeps SQLite and secrets.env (other commands read them too)."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_DATA_DIR,
        show_default=True,
        envvar="ENVCAT_DATA_DIR",
        show_envvar=True,
        help="Holds the SQLite database and secrets.env; their values fill in "
        "what the environment does not set.",
    )(function)


def _echo(text: str) -> None:
    click.echo(text, err=True)


@click.group("server", context_settings={"help_option_names": ["-h", "--help"]})
def server() -> None:
    """Run and administer an EnvCat server.

    Server commands read their configuration from environment variables
    (DATABASE_URL, REDIS_URL, BUNDLE_KMS_KEY, BFF_SHARED_SECRET, …); values
    in DATA_DIR/secrets.env fill in whatever the environment does not set.
    """


@server.command()
@click.option("--demo", is_flag=True, help="Also create a demo account and a demo/app bundle.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Address the web UI binds.",
)
@click.option(
    "--api-port",
    type=_PORT,
    default=5000,
    show_default=True,
    metavar="PORT",
    help="Port of the api (always on 127.0.0.1).",
)
@click.option(
    "--bff-port",
    type=_PORT,
    default=8888,
    show_default=True,
    metavar="PORT",
    help="Port of the web UI and public /api/v1.",
)
@data_dir_option
@click.pass_context
def up(
    ctx: click.Context, demo: bool, host: str, api_port: int, bff_port: int, data_dir: Path
) -> None:
    """Run the whole system on this machine, without Docker.

    Generates dev secrets into DATA_DIR/secrets.env (mode 0600) once, keeps
    SQLite in DATA_DIR, migrates it, starts a private redis-server when
    REDIS_URL is unset, then the api, a worker, beat and the web UI, and
    prints the URL to open once all answer. Ctrl-C stops everything.
    """
    from envcat.ops.up import UpOptions, run_up

    if api_port == bff_port:
        raise click.BadParameter("must differ from --bff-port", param_hint="--api-port")
    ctx.exit(run_up(UpOptions(host, api_port, bff_port, data_dir, demo)))


@server.command("init-db")
@data_dir_option
def init_db(data_dir: Path) -> None:
    """Create or upgrade the database schema (safe to run again)."""
    settings = load_server_settings(data_dir)
    from envcat.ops import maintenance

    maintenance.init_database(settings)
    _echo("The database schema is up to date.")


@server.command("gen-keys")
def gen_keys() -> None:
    """Print fresh secrets as KEY=value lines for an env file.

    DELIVERY_SIGNING_KEY is for the workers only; DELIVERY_PUBLIC_KEYS (its
    public half) is for the api; BUNDLE_KMS_KEY never goes to the bff
    (docs/self-hosting.md shows which file each line belongs in).

    \b
    Example:
      (umask 077; envcat server gen-keys > .envcat/secrets.env)
    """
    from envcat.ops import signing

    values = generate_secrets()
    for name, value in values.items():
        click.echo(f"{name}={value}")
    # Compose's second Redis user, limited to the bff's own keys (up runs one user).
    click.echo(f"REDIS_BFF_PASSWORD={secrets.token_hex(32)}")
    # Not a secret: the api serves it; the seeds stay with the workers.
    public = signing.public_keys_setting(values[signing.SIGNING_VARIABLE])
    click.echo(f"{signing.PUBLIC_VARIABLE}={public}")


@server.command("rotate-signing-key")
@click.option(
    "--secrets-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The env file holding DELIVERY_SIGNING_KEY [default: DATA_DIR/secrets.env].",
)
@click.option("--drop-old", is_flag=True, help="End a rotation: keep only the new primary key.")
@data_dir_option
def rotate_signing_key(secrets_file: Path | None, drop_old: bool, data_dir: Path) -> None:
    """Rotate the key the workers sign deliveries with (DELIVERY_SIGNING_KEY).

    Puts a fresh key first in DELIVERY_SIGNING_KEY and keeps the current one
    second: the workers sign with both, so a CLI that pinned the old key still
    verifies deliveries and learns the new key from them. After the grace period
    (30 days is a good default) run it again with --drop-old.
    """
    from envcat.ops import signing

    path = secrets_file or data_dir / SECRETS_FILE
    if drop_old:
        result = signing.drop_old(path)
        click.echo(result.primary)
        _echo(f"{path}: DELIVERY_SIGNING_KEY now holds only the primary key.")
        _echo(f"The api serves {signing.PUBLIC_VARIABLE}={result.public_keys}")
        _echo("Restart the workers and the api with it.")
        return
    result = signing.rotate(path)
    click.echo(result.primary)
    _echo(f"{path}: a new primary delivery signing key {result.primary}")
    if result.kept:
        _echo(f"keeps signing with the previous key {result.kept[0]} during the grace period.")
    _echo(f"The api serves {signing.PUBLIC_VARIABLE}={result.public_keys}")
    _echo("1. Restart the workers (they sign) and the api (it serves the public keys).")
    _echo(
        f"2. Keep the old key for the grace period ({signing.GRACE_DAYS} days is a good default): "
        "CLIs pinned to it verify deliveries signed by both keys and learn the new one."
    )
    _echo("3. Then run: envcat server rotate-signing-key --drop-old, and restart again.")


@server.command("rotate-kms")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Values re-encrypted per task.",
)
@click.option("--no-wait", is_flag=True, help="Enqueue the batches and return at once.")
@data_dir_option
def rotate_kms(batch_size: int, no_wait: bool, data_dir: Path) -> None:
    """Re-encrypt every stored value under the primary BUNDLE_KMS_KEY key.

    Put the new key first in BUNDLE_KMS_KEY (keep the old ones after it) on
    every process, then run this: it enqueues envcat.rotate_kms batches on the
    maintenance queue and shows progress until no value is left under an old
    key. Remove an old key only after that.
    """
    settings = load_server_settings(data_dir)
    from envcat.ops import maintenance

    def echo(text: str) -> None:
        _echo(f"rotate-kms: {text}")

    maintenance.rotate_keys(settings, batch_size, wait=not no_wait, echo=echo)


def _read_password(from_stdin: bool) -> str:
    if not from_stdin:
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))
    text = sys.stdin.read()
    password = text[:-1] if text.endswith("\n") else text
    password = password.removesuffix("\r")
    if not password:
        raise OpsError("envcat: no password on stdin")
    return password


@server.command("create-user")
@click.option("--email", required=True, help="The new account's email address.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@data_dir_option
def create_user(email: str, password_stdin: bool, data_dir: Path) -> None:
    """Create a local account and its personal workspace (AUTH_PROVIDER=local).

    Without --password-stdin the password is asked twice, without echo.

    \b
    Example:
      printf '%s\\n' "$PASSWORD" | envcat server create-user --email a@example.com --password-stdin
    """
    settings = load_server_settings(data_dir)
    password = _read_password(password_stdin)
    from envcat.ops import maintenance

    account = maintenance.create_user(settings, email, password)
    _echo(
        f"Created {account.email} (user {account.user_id}), owner of workspace {account.tenant_id}."
    )


@server.command("verify-audit")
@data_dir_option
def verify_audit(data_dir: Path) -> None:
    """Check every tenant's hash-chained audit log; exit 1 if any was altered."""
    settings = load_server_settings(data_dir)
    from envcat.ops import maintenance

    summary = maintenance.verify_audit(settings)
    for report in summary.broken:
        click.echo(
            f"tenant {report.tenant_id}: audit chain broken at event {report.broken_at}", err=True
        )
    if summary.broken:
        first = summary.broken[0]
        raise OpsError(
            f"envcat: the audit log was altered: first broken event {first.broken_at} "
            f"(tenant {first.tenant_id}); {len(summary.broken)} tenant(s) affected"
        )
    click.echo(f"Audit log intact: {summary.events} events in {len(summary.reports)} tenant(s).")


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


@server.command("backup-keygen")
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


@server.command("backup-signing-keygen")
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


@server.command("backup")
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


@server.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--identity",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The backup private key file (from backup-keygen).",
)
@click.option("--passphrase", is_flag=True, help="Ask for the backup's passphrase.")
@click.option("--passphrase-stdin", is_flag=True, help="Read the passphrase from stdin.")
@click.option(
    "--signed-by",
    metavar="PUBLIC_KEY",
    help="Refuse the file unless signed by this key (from backup-signing-keygen).",
)
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
    from envcat.services.backup_crypto import Identity, key_id

    key = backups.read_identity_file(identity) if identity is not None else None
    signer = None
    if signed_by is not None:
        signer = backups.public_key_argument(signed_by, "--signed-by")
    secret = None
    if passphrase or passphrase_stdin:
        secret = _read_passphrase(passphrase_stdin, confirm=False)
    result = backups.restore(settings, file, Identity(key, secret, signer))
    manifest = result.manifest
    if signer is not None:
        _echo(f"Signature verified: signed by {key_id(signer)}.")
    elif result.signer is not None:
        _echo(
            f"Signed by {key_id(result.signer)} (consistent, but not required: pass "
            "--signed-by to refuse files anyone else wrote)."
        )
    elif secret is None:
        _echo("The backup is not signed: anyone who knows BACKUP_PUBLIC_KEY could have made it.")
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
