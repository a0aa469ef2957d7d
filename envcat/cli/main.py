"""The `envcat` command line (DESIGN.md §8): `get`, `run`, `init`, `trust`, lazy `server`.

Only click and this package's light modules load at start-up; httpx, PyNaCl
and qrcode load inside the commands, so `envcat --version` and `--help` stay
fast, and the server code loads only for `envcat server …`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from envcat import __version__
from envcat.cli.approvers import approvers
from envcat.cli.commands import ARGV, CHILD, EnvcatGroup, RecordingCommand, RunCommand
from envcat.cli.device import device
from envcat.cli.errors import Cancelled, CliError
from envcat.cli.login import login, logout, signed_in_token, whoami
from envcat.cli.options import (
    FORMAT_CHOICES,
    check_write_path,
    hint_options,
    oidc_options,
    wait_options,
)
from envcat.cli.plan import apply, plan
from envcat.cli.scan import scan
from envcat.cli.setup_commands import init, trust
from envcat.core.wire import unattended_allow_list

if TYPE_CHECKING:
    from envcat.cli.config import Settings
    from envcat.core.envelope import Envelope

# our own flags whose values are names, not secrets: shown to the approver as typed
OWN_PLAIN_FLAGS = ("--key",)


@click.group("envcat", cls=EnvcatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="envcat", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Get secrets into your terminal once a person approves the request in a browser.

    Each request makes a fresh key pair; the server seals the approved values
    to it, so only this terminal can open what is sent, and signs what it
    delivers with a key this CLI pins. No value is stored on disk unless you
    ask for a file with --write.

    \b
    Quick start:
      envcat init                       # once per project: writes .envcat.toml
      eval "$(envcat get production/api)"
      envcat run production/api -- ./manage.py runserver
    """


cli.add_command(init)
cli.add_command(trust)
cli.add_command(approvers)
cli.add_command(scan)
cli.add_command(login)
cli.add_command(logout)
cli.add_command(whoami)
cli.add_command(plan)
cli.add_command(apply)
cli.add_command(device)


@cli.command(cls=RecordingCommand)
@hint_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    help="Output format.  [default: sh, or dotenv with --write]",
)
@click.option(
    "--write",
    "write_path",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=check_write_path,
    metavar="PATH",
    help="Write to PATH (atomically, mode 0600; never through a symlink) instead of stdout.",
)
@wait_options
@oidc_options
@click.pass_context
def get(
    ctx: click.Context,
    bundle: str | None,
    keys: list[str],
    workspace: str | None,
    allow_vars: list[str],
    server: str | None,
    insecure_http: bool,
    no_qr: bool,
    timeout: int | None,
    oidc: bool,
    audience: str | None,
    id_token_file: Path | None,
    fmt: str | None,
    write_path: Path | None,
) -> None:
    """Ask for secrets and print them once the request is approved.

    BUNDLE (e.g. production/api, default: bundle in .envcat.toml) and -k KEY
    are preselected on the approval page. The delivery is signed by the
    server; it is refused (exit 6) unless it comes from your workspace, from
    BUNDLE when you named one, and holds only the -k keys when you gave any;
    when .envcat.toml lists approvers, also unless one of their passkeys
    signed this exact approval (see `envcat approvers`).
    Only the values go to stdout. The approval URL, QR code, verification
    phrase and progress go to stderr: approve only if the page shows the
    same phrase (or, where the page asks for it, type it there).

    \b
    Examples:
      eval "$(envcat get production/api)"              # bash, zsh, dash
      envcat get production/api --format fish | source  # fish
      envcat get -w acme -k DATABASE_URL -k REDIS_URL --format json
      envcat get production/api --write .env           # dotenv, mode 0600

    \b
    Formats: sh (export K='v'), fish (set -gx K 'v'), dotenv (K="v"),
    json (one object), docker (K=v, for docker run --env-file), github
    (appends to $GITHUB_ENV for later steps; prints only ::add-mask::).

    \b
    In CI, --oidc asks with the job's OIDC ID token (GitHub Actions:
    `permissions: id-token: write`); a trust policy of the workspace may
    then approve at once:
      envcat get production/api --oidc --format github
    Without OIDC, a service token in $ENVCAT_TOKEN is sent instead.
    Exit codes: 0 delivered, 1 error, 2 usage, 3 expired or timed out,
    4 denied, 5 server unreachable, 6 untrusted delivery (refused),
    130 cancelled (Ctrl-C), 129/143 cancelled by SIGHUP/SIGTERM.
    """
    chosen = fmt or ("dotenv" if write_path is not None else "sh")
    github_env = _github_env(chosen, write_path)
    settings = _settings(ctx, server, workspace, bundle, insecure_http)
    command = _redacted(ctx.meta[ARGV], keep=OWN_PLAIN_FLAGS)
    id_token = _id_token(settings, oidc, audience, id_token_file)
    envelope = _deliver(
        ctx, settings, keys, allow_vars, command, no_qr=no_qr, timeout=timeout, id_token=id_token
    )
    values = envelope.keys
    if github_env is not None:
        _write_github(values, github_env, envelope)
        return
    text = _render(values, chosen, envelope.bundle_name)
    source = _bundle_label(envelope)
    if write_path is not None:
        from envcat.cli.output import write_private_file

        target = write_private_file(write_path, text)
        click.echo(f"Wrote {_count(values)} from {source} to {target} (mode 0600).", err=True)
        return
    click.echo(text.encode("utf-8"), nl=False)  # bytes: exact UTF-8 whatever the locale
    click.echo(f"Received {_count(values)} from {source}.", err=True)


@cli.command(cls=RunCommand)
@hint_options
@wait_options
@oidc_options
@click.pass_context
def run(
    ctx: click.Context,
    bundle: str | None,
    keys: list[str],
    workspace: str | None,
    allow_vars: list[str],
    server: str | None,
    insecure_http: bool,
    no_qr: bool,
    timeout: int | None,
    oidc: bool,
    audience: str | None,
    id_token_file: Path | None,
) -> None:
    """Run a command with the approved secrets in its environment.

    The values are added on top of the current environment and the command
    replaces envcat (exec): nothing touches disk, and the exit code and
    signals are the command's own. The command is looked up with your own
    PATH before anything is asked, and runs without a shell; use
    `sh -c '...'` for pipes or variable expansion. The delivery is checked
    as for `get` before the command runs.

    \b
    Examples:
      envcat run production/api -- ./manage.py runserver
      envcat run -k DATABASE_URL -k SECRET_KEY -- python app.py
      envcat run production/api -- sh -c 'echo "$API_URL"'

    \b
    Exit codes: the command's own once it runs; before that 1 error,
    2 usage, 3 expired, 4 denied, 5 server unreachable, 6 untrusted
    delivery (nothing runs), 126 cannot execute, 127 command not found,
    130 cancelled, 129/143 cancelled by SIGHUP/SIGTERM.
    """
    from envcat.cli.output import check_command, child_environment, exec_command

    command: list[str] = ctx.meta[CHILD]
    if not command:
        raise click.UsageError("give the command after --, e.g. envcat run prod/api -- ./app")
    program = check_command(command)
    settings = _settings(ctx, server, workspace, bundle, insecure_http)
    id_token = _id_token(settings, oidc, audience, id_token_file)
    envelope = _deliver(
        ctx,
        settings,
        keys,
        allow_vars,
        _redacted(command),
        no_qr=no_qr,
        timeout=timeout,
        id_token=id_token,
    )
    click.echo(
        f"Received {_count(envelope.keys)} from {_bundle_label(envelope)}; running {command[0]}.",
        err=True,
    )
    exec_command(program, command, child_environment(envelope.keys, os.environ))


def _settings(
    ctx: click.Context,
    server: str | None,
    workspace: str | None,
    bundle: str | None,
    insecure_http: bool,
) -> Settings:
    from envcat.cli.config import resolve_for_command

    return resolve_for_command(server, workspace, bundle, insecure_http=insecure_http, warn=_say)


def _redacted(command: Sequence[str], keep: Sequence[str] = ()) -> list[str]:
    from envcat.cli.redact import redact_command

    return redact_command(command, keep=keep)


def _say(text: str) -> None:
    click.echo(text, err=True)


def _deliver(
    ctx: click.Context,
    settings: Settings,
    keys: Sequence[str],
    allow_vars: Sequence[str],
    command: Sequence[str],
    *,
    no_qr: bool,
    timeout: int | None,
    id_token: str | None = None,
) -> Envelope:
    """Ask, wait, and return the envelope only once it passed every check (else exit 6)."""
    from dataclasses import replace

    from envcat.cli.device import for_request, public_fingerprint
    from envcat.cli.display import Terminal, safe_text
    from envcat.cli.flow import ApprovalFlow, Hints
    from envcat.cli.pins import KnownServers
    from envcat.cli.protocol import make_client
    from envcat.cli.runtime import runtime_from
    from envcat.cli.verify import Expected, Trust, refuse_dangerous, verify_delivery

    workspace = settings.require_workspace()
    machine = bool(id_token or os.environ.get("ENVCAT_TOKEN"))
    device_key = None if machine else for_request(_say)  # issue #17: signs the request
    if device_key is not None:
        _say(f"this device: {public_fingerprint(device_key)}")
    hints = Hints(
        workspace=workspace,
        bundle=settings.bundle,
        template_keys=keys,
        command=command,
        id_token=id_token,
        # a service token for CI without OIDC (issue #16); --oidc takes precedence
        service_token=None if id_token else (os.environ.get("ENVCAT_TOKEN") or None),
        device=device_key,
    )
    if not (hints.id_token or hints.service_token):  # a signed-in terminal names you (#17)
        hints = replace(hints, user_token=signed_in_token(settings.server, workspace))
    runtime = runtime_from(ctx.obj)
    interactive = sys.stderr.isatty() if runtime.interactive is None else runtime.interactive
    terminal = Terminal(sys.stderr, interactive=interactive, show_qr=not no_qr)
    with contextlib.ExitStack() as stack:
        client = runtime.client
        if client is None:  # ours to close; an injected client belongs to the caller
            client = stack.enter_context(make_client(settings.server))
        try:
            sealed = ApprovalFlow(client, terminal, runtime.clock).fetch(hints, timeout)
        except KeyboardInterrupt:
            raise Cancelled() from None
    project, project_pin = settings.project, settings.project_pin
    trust = Trust(
        server=settings.server,
        known=KnownServers.default(),
        project_pin=project_pin,
        project_file=str(project.path) if project is not None and project_pin else None,
    )
    expected = Expected(sealed.request_id, sealed.public_key, workspace, settings.bundle, keys)
    passkey_check = None
    if settings.approvers:  # issue #20: a listed person's passkey must have signed this
        from envcat.cli.approvers import PasskeyCheck

        passkey_check = PasskeyCheck(sealed.request_id, sealed.public_key, settings)
    envelope = verify_delivery(
        sealed.private_key, sealed.ciphertext, expected, trust, _say, also=passkey_check
    )
    if passkey_check is not None and (allowed := unattended_allow_list(envelope.approver_id)):
        _say(f"unattended delivery accepted: .envcat.toml's {allowed} names this bundle")
    elif passkey_check is not None:
        _say(passkey_check.summary())
    _refuse_unsafe(envelope.keys)
    refuse_dangerous(envelope.keys, [*allow_vars, *settings.allow_vars])
    if envelope.grant is not None:
        from envcat.cli.device import describe_grant

        _say(describe_grant(envelope.grant))
    _say(
        f"approved by {safe_text(envelope.approver_email, 120)} in "
        f"{safe_text(envelope.workspace_slug, 80)} · {safe_text(envelope.bundle_name, 120)}"
    )
    if envelope.break_glass is not None:  # issue #17: an owner released alone, past the rules
        _say(
            f"! delivered by break-glass: {safe_text(envelope.approver_email, 120)} — "
            f"{safe_text(envelope.break_glass['reason'], 500)}"
        )
    return envelope


def _id_token(
    settings: Settings, oidc: bool, audience: str | None, token_file: Path | None
) -> str | None:
    """The workload's ID token with --oidc (issue #16), else None."""
    if not oidc:
        if audience is not None or token_file is not None:
            raise click.UsageError("--audience and --id-token-file go with --oidc")
        return None
    from envcat.cli.oidc import obtain_id_token

    return obtain_id_token(os.environ, audience or settings.server, token_file)


def _github_env(fmt: str, write_path: Path | None) -> Path | None:
    """The $GITHUB_ENV file for --format github (checked before anything is asked)."""
    if fmt != "github":
        return None
    if write_path is not None:
        raise click.UsageError("--format github appends to $GITHUB_ENV; drop --write")
    target = os.environ.get("GITHUB_ENV")
    if not target:
        raise click.UsageError("--format github needs $GITHUB_ENV (set by GitHub Actions)")
    return Path(target)


def _write_github(values: Mapping[str, str], target: Path, envelope: Envelope) -> None:
    """Masks to stdout first, then the values appended to $GITHUB_ENV (issue #16)."""
    from envcat.cli.formats import FormatError
    from envcat.cli.github import append_github_env, github_env_text, mask_commands

    try:
        text = github_env_text(values)
    except FormatError as exc:
        raise CliError(f"{exc} (nothing was written)") from None
    click.echo(mask_commands(values).encode("utf-8"), nl=False)
    sys.stdout.flush()
    try:
        append_github_env(target, text)
    except OSError as exc:
        raise CliError(f"cannot append to $GITHUB_ENV ({target}): {exc.strerror}") from None
    click.echo(
        f"Set {_count(values)} from {_bundle_label(envelope)} for the next steps "
        "(each value line is masked in the logs).",
        err=True,
    )


def _bundle_label(envelope: Envelope) -> str:
    from envcat.cli.display import safe_text

    return safe_text(envelope.bundle_name, 120)


def _render(values: Mapping[str, str], fmt: str, bundle: str) -> str:
    from envcat.cli.display import safe_text
    from envcat.cli.formats import FormatError, render

    try:
        return render(values, fmt)
    except FormatError as exc:
        raise CliError(
            f"{exc} (delivered from {safe_text(bundle, 120)}; nothing was printed; "
            "ask again with another --format)"
        ) from None


def _refuse_unsafe(values: Mapping[str, str]) -> None:
    from envcat.cli.formats import FormatError, validate_values

    try:
        validate_values(values)
    except FormatError as exc:
        raise CliError(str(exc)) from None


def _count(values: Mapping[str, str]) -> str:
    return f"{len(values)} value{'' if len(values) == 1 else 's'}"


def main() -> None:
    """Console-script entry point: `envcat`."""
    cli.main(prog_name="envcat")


if __name__ == "__main__":
    main()
