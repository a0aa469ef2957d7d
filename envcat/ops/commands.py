"""`envcat server …`: run and administer an EnvCat server (DESIGN §8).

The CLI's main group loads this module lazily; each command imports the heavy
server modules (Flask, SQLAlchemy, Celery) only when it runs, so `--help` and
`gen-keys` stay quick.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import click

from envcat.ops.backup_commands import BACKUP_COMMANDS
from envcat.ops.config import (
    SECRETS_FILE,
    OpsError,
    data_dir_option,
    generate_secrets,
    load_server_settings,
)

_PORT = click.IntRange(1, 65535)


def _echo(text: str) -> None:
    click.echo(text, err=True)


@click.group("server", context_settings={"help_option_names": ["-h", "--help"]})
def server() -> None:
    """Run and administer an EnvCat server.

    Server commands read their configuration from environment variables
    (DATABASE_URL, REDIS_URL, BUNDLE_KMS_KEY, BFF_SHARED_SECRET, …); values
    in DATA_DIR/secrets.env fill in whatever the environment does not set.
    """


# backup, restore and their key generators (issue #21) live in their own module.
for _command in BACKUP_COMMANDS:
    server.add_command(_command)


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


@server.command("scan-fingerprints")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="Values fingerprinted per transaction.",
)
@data_dir_option
def scan_fingerprints(batch_size: int, data_dir: Path) -> None:
    """Fingerprint stored values for `envcat scan` (issue #19).

    Values written before secret scanning existed, or under another scan key, are
    decrypted here and get HMAC(scan key, SHA-256(value)); values under 12 characters
    get none. Run it once after upgrading, and again after changing SCAN_FINGERPRINT_KEY
    (or, when that is unset, after `rotate-kms` and before removing the old key).
    A re-run is harmless.
    """
    settings = load_server_settings(data_dir)
    from envcat.ops import maintenance

    done = maintenance.refresh_fingerprints(settings, batch_size)
    _echo(
        f"scan-fingerprints: {done.fingerprinted} fingerprinted, {done.too_short} too short, "
        f"{done.undecryptable} not decryptable."
    )
    if done.undecryptable:
        raise OpsError("envcat: some stored values do not decrypt with BUNDLE_KMS_KEY")


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
