"""The `envcat` command line (DESIGN.md §8): `get`, `run` and the lazy `server` group.

Only click and this package's light modules load at start-up; httpx, PyNaCl
and qrcode load inside the commands, so `envcat --version` and `--help` stay
fast, and the server code loads only for `envcat server …`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from envcat import __version__
from envcat.cli.commands import ARGV, CHILD, EnvcatGroup, RecordingCommand, RunCommand
from envcat.cli.errors import Cancelled, CliError

if TYPE_CHECKING:
    from envcat.cli.flow import Hints
    from envcat.cli.runtime import Runtime

DEFAULT_SERVER = "http://localhost:8888"
FORMAT_CHOICES = ("sh", "fish", "dotenv", "json", "docker")
F = TypeVar("F", bound=Callable[..., Any])


def _is_web_url(value: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unclosed [ or a port that is not a number
        return False


def _check_server(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _is_web_url(value):
        raise click.BadParameter("expected an http:// or https:// URL, e.g. https://envcat.example")
    return value.rstrip("/")


def _check_write_path(
    ctx: click.Context, param: click.Parameter, value: Path | None
) -> Path | None:
    from envcat.cli.output import resolve_write_target

    if value is not None:  # fail before anyone is asked to approve, not after
        try:
            resolve_write_target(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _check_keys(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> list[str]:
    from envcat.cli.formats import is_valid_name

    for name in value:
        if not is_valid_name(name):
            raise click.BadParameter(f"{name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return list(value)


def _apply(function: F, decorators: Sequence[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _hint_options(function: F) -> F:
    """BUNDLE and -k KEY: what to ask for (hints; the approver decides)."""
    return _apply(
        function,
        [
            click.argument("bundle", required=False),
            click.option(
                "-k",
                "--key",
                "keys",
                multiple=True,
                metavar="KEY",
                callback=_check_keys,
                help="A key to ask for; repeat for more. A hint: the approver decides.",
            ),
        ],
    )


def _wait_options(function: F) -> F:
    """--server, --no-qr and --timeout: where to ask and how to wait."""
    return _apply(
        function,
        [
            click.option(
                "--server",
                envvar="ENVCAT_SERVER",
                default=DEFAULT_SERVER,
                show_default=True,
                show_envvar=True,
                callback=_check_server,
                metavar="URL",
                help="The EnvCat server.",
            ),
            click.option("--no-qr", is_flag=True, help="Do not draw the QR code on the terminal."),
            click.option(
                "--timeout",
                type=click.IntRange(min=1),
                metavar="SECONDS",
                help="Stop waiting after this long (default: until the request expires).",
            ),
        ],
    )


@click.group("envcat", cls=EnvcatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="envcat", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Get secrets into your terminal once a person approves the request in a browser.

    Each request makes a fresh key pair; the server seals the approved values
    to it, so only this terminal can read them. Nothing is stored on disk
    unless you ask for a file with --write.

    \b
    Quick start:
      eval "$(envcat get production/api)"
      envcat run production/api -- ./manage.py runserver
    """


@cli.command(cls=RecordingCommand)
@_hint_options
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
    callback=_check_write_path,
    metavar="PATH",
    help="Write to PATH (atomically, mode 0600) instead of stdout.",
)
@_wait_options
@click.pass_context
def get(
    ctx: click.Context,
    bundle: str | None,
    keys: list[str],
    server: str,
    no_qr: bool,
    timeout: int | None,
    fmt: str | None,
    write_path: Path | None,
) -> None:
    """Ask for secrets and print them once the request is approved.

    BUNDLE (e.g. production/api) and -k KEY are hints the approval page
    preselects; the approver decides what is sent. Only the values go to
    stdout. The approval URL, QR code, verification phrase and progress go
    to stderr: approve only if the page shows the same phrase.

    \b
    Examples:
      eval "$(envcat get production/api)"              # bash, zsh, dash
      envcat get production/api --format fish | source  # fish
      envcat get -k DATABASE_URL -k REDIS_URL --format json
      envcat get production/api --write .env           # dotenv, mode 0600

    \b
    Formats: sh (export K='v'), fish (set -gx K 'v'), dotenv (K="v"),
    json (one object), docker (K=v, for docker run --env-file).
    Exit codes: 0 delivered, 1 error, 2 usage, 3 expired or timed out,
    4 denied, 5 server unreachable, 130 cancelled (Ctrl-C).
    """
    from envcat.cli.flow import Hints

    chosen = fmt or ("dotenv" if write_path is not None else "sh")
    hints = Hints(bundle=bundle, template_keys=keys, command=ctx.meta[ARGV])
    values = _fetch(ctx, server, hints, show_qr=not no_qr, timeout=timeout)
    text = _render(values, chosen)
    if write_path is not None:
        from envcat.cli.output import write_private_file

        target = write_private_file(write_path, text)
        click.echo(f"Wrote {_count(values)} to {target} (mode 0600).", err=True)
        return
    click.echo(text.encode("utf-8"), nl=False)  # bytes: exact UTF-8 whatever the locale
    click.echo(f"Received {_count(values)}.", err=True)


@cli.command(cls=RunCommand)
@_hint_options
@_wait_options
@click.pass_context
def run(
    ctx: click.Context,
    bundle: str | None,
    keys: list[str],
    server: str,
    no_qr: bool,
    timeout: int | None,
) -> None:
    """Run a command with the approved secrets in its environment.

    The values are added on top of the current environment and the command
    replaces envcat (exec): nothing touches disk, and the exit code and
    signals are the command's own. The command runs without a shell; use
    `sh -c '...'` for pipes or variable expansion.

    \b
    Examples:
      envcat run production/api -- ./manage.py runserver
      envcat run -k DATABASE_URL -k SECRET_KEY -- python app.py
      envcat run production/api -- sh -c 'echo "$API_URL"'

    \b
    Exit codes: the command's own once it runs; before that 1 error,
    2 usage, 3 expired, 4 denied, 5 server unreachable, 126 cannot
    execute, 127 command not found, 130 cancelled.
    """
    from envcat.cli.flow import Hints
    from envcat.cli.output import check_command, child_environment, exec_command

    command: list[str] = ctx.meta[CHILD]
    if not command:
        raise click.UsageError("give the command after --, e.g. envcat run prod/api -- ./app")
    check_command(command)
    hints = Hints(bundle=bundle, template_keys=keys, command=command)
    values = _fetch(ctx, server, hints, show_qr=not no_qr, timeout=timeout)
    _refuse_unsafe(values)
    click.echo(f"Received {_count(values)}; running {command[0]}.", err=True)
    exec_command(command, child_environment(values, os.environ))


def _runtime(obj: object) -> Runtime:
    import httpx

    from envcat.cli.runtime import Runtime

    if obj is None:
        return Runtime()
    if isinstance(obj, Runtime):
        return obj
    if isinstance(obj, httpx.Client):
        return Runtime(client=obj)
    raise TypeError(f"ctx.obj must be a Runtime or an httpx.Client, not {type(obj).__name__}")


def _fetch(
    ctx: click.Context, server: str, hints: Hints, *, show_qr: bool, timeout: int | None
) -> dict[str, str]:
    from envcat.cli.display import Terminal
    from envcat.cli.flow import ApprovalFlow
    from envcat.cli.protocol import make_client

    runtime = _runtime(ctx.obj)
    interactive = sys.stderr.isatty() if runtime.interactive is None else runtime.interactive
    terminal = Terminal(sys.stderr, interactive=interactive, show_qr=show_qr)
    with contextlib.ExitStack() as stack:
        client = runtime.client
        if client is None:  # ours to close; an injected client belongs to the caller
            client = stack.enter_context(make_client(server))
        try:
            return ApprovalFlow(client, terminal, runtime.clock).fetch(hints, timeout)
        except KeyboardInterrupt:
            raise Cancelled() from None


def _render(values: Mapping[str, str], fmt: str) -> str:
    from envcat.cli.formats import FormatError, render

    try:
        return render(values, fmt)
    except FormatError as exc:
        raise CliError(str(exc)) from None


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
