"""`envcat init` (write a project's `.envcat.toml`) and `envcat trust` (pin a server's key)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from envcat.cli.config import DEFAULT_SERVER, PROJECT_FILE, is_web_url
from envcat.cli.errors import CliError, ServerUnreachable, Untrusted, UsageProblem
from envcat.cli.options import (
    check_workspace_option,
    insecure_http_option,
    server_option,
)

if TYPE_CHECKING:
    import httpx

    from envcat.cli.protocol import ServerKey


def _client(ctx: click.Context, server: str) -> contextlib.AbstractContextManager[httpx.Client]:
    from envcat.cli.runtime import client_for

    return client_for(ctx.obj, server)


def _fetch_key(ctx: click.Context, server: str) -> ServerKey:
    from envcat.cli.protocol import fetch_server_key

    with _client(ctx, server) as client:
        return fetch_server_key(client)


def _say(text: str) -> None:
    click.echo(text, err=True)


def _show_key(server: str, key: ServerKey) -> None:
    _say(f"{server} signs deliveries with the key {key.fingerprint}")
    others = [fp for fp in key.all_fingerprints if fp != key.fingerprint]
    if others:
        _say(f"  (also still signing during a key rotation: {', '.join(others)})")


def _default_server() -> str:
    from envcat.cli.config import load_user

    user = load_user()
    return os.environ.get("ENVCAT_SERVER") or (user.server if user else None) or DEFAULT_SERVER


def _ask_server(server: str | None, yes: bool) -> str:
    if server is not None:
        return server
    if yes:
        return _default_server().rstrip("/")

    def checked(value: str) -> str:
        if not is_web_url(value):
            raise click.BadParameter("expected an http:// or https:// URL")
        return value.rstrip("/")

    answer: str = click.prompt(
        "EnvCat server", default=_default_server(), value_proc=checked, err=True
    )
    return answer


def _ask_workspace(workspace: str | None, yes: bool) -> str:
    from envcat.core.wire import WORKSPACE_SLUG_RULE, is_workspace_slug

    if workspace is not None:
        return workspace
    if yes:
        raise UsageProblem("envcat init --yes needs --workspace SLUG")

    def checked(value: str) -> str:
        if not is_workspace_slug(value):
            raise click.BadParameter(f"not a workspace slug ({WORKSPACE_SLUG_RULE})")
        return value

    answer: str = click.prompt("Workspace (slug)", value_proc=checked, err=True)
    return answer


def _toml_line(name: str, value: str) -> str:
    # a JSON string is a valid TOML basic string (same escapes)
    return f"{name} = {json.dumps(value, ensure_ascii=False)}\n"


def project_text(server: str, workspace: str, bundle: str | None, fingerprint: str | None) -> str:
    """Return the `.envcat.toml` text for these settings."""
    lines = [
        "# EnvCat project settings: no secrets, meant to be committed.\n",
        "# Read by `envcat get` and `envcat run` in this directory and below.\n",
        _toml_line("server", server),
        _toml_line("workspace", workspace),
    ]
    if bundle:
        lines.append(_toml_line("bundle", bundle))
    if fingerprint:
        lines.append(
            "# the server's delivery key: deliveries signed by any other key are refused\n"
        )
        lines.append(_toml_line("server_fingerprint", fingerprint))
    lines.append("# delivered names that may change how programs run, allowed one by one\n")
    lines.append("allow_vars = []\n")
    return "".join(lines)


def _write_project(target: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # committed with the project: readable like its other files
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None


@click.command()
@server_option
@click.option(
    "-w", "--workspace", callback=check_workspace_option, metavar="SLUG", help="Workspace slug."
)
@click.option("--bundle", metavar="BUNDLE", help="Default bundle, e.g. production/api.")
@click.option("--yes", is_flag=True, help="Ask nothing: take the flags and defaults, pin the key.")
@click.option("--force", is_flag=True, help="Replace an existing .envcat.toml.")
@click.option("--no-pin", is_flag=True, help="Do not fetch or pin the server's key.")
@insecure_http_option
@click.pass_context
def init(
    ctx: click.Context,
    server: str | None,
    workspace: str | None,
    bundle: str | None,
    yes: bool,
    force: bool,
    no_pin: bool,
    insecure_http: bool,
) -> None:
    """Write .envcat.toml here: server, workspace, default bundle and the server's key.

    The file holds no secret and is meant to be committed, so everyone in the
    project asks the same server and workspace, and `envcat run -- ./app`
    works without arguments. With the key pinned, deliveries signed by any
    other key are refused from the first use on.
    """
    from envcat.cli.config import check_transport
    from envcat.cli.output import resolve_write_target

    target = Path.cwd() / PROJECT_FILE
    try:
        resolve_write_target(target)
    except ValueError as exc:
        raise CliError(f"cannot write {target}: {exc}") from None
    if target.exists() and not force:
        raise CliError(f"{target} already exists; pass --force to replace it")
    server = _ask_server(server, yes)
    check_transport(server, insecure_http=insecure_http, warn=_say)
    workspace = _ask_workspace(workspace, yes)
    if bundle is None and not yes:
        bundle = click.prompt("Default bundle (empty for none)", default="", err=True) or None
    fingerprint = None
    if not no_pin:
        try:
            key = _fetch_key(ctx, server)
        except ServerUnreachable as exc:
            raise ServerUnreachable(
                f"{exc.message} (pass --no-pin to write the file without the key)"
            ) from None
        _show_key(server, key)
        if yes or click.confirm("Pin this key in .envcat.toml?", default=True, err=True):
            fingerprint = key.fingerprint
    _write_project(target, project_text(server, workspace, bundle, fingerprint))
    pinned = f", key {fingerprint} pinned" if fingerprint else ""
    _say(f"Wrote {target} (workspace {workspace}{pinned}). Commit it with the project.")


@click.command()
@server_option
@click.option(
    "--fingerprint",
    "expected",
    metavar="SHA256:…",
    help="Trust the key only if it has this fingerprint (from the server's operator).",
)
@click.option("--yes", is_flag=True, help="Trust without asking.")
@insecure_http_option
@click.pass_context
def trust(
    ctx: click.Context, server: str | None, expected: str | None, yes: bool, insecure_http: bool
) -> None:
    """Fetch the server's delivery key and pin it in ~/.config/envcat/known_servers.

    Use it before the first request (instead of trusting on first use), or
    after the server's key was replaced: compare the fingerprint with the one
    the server's operator gives you (`envcat server` prints it), or pass it
    with --fingerprint.
    """
    from envcat.cli.config import check_transport, is_fingerprint, resolve
    from envcat.cli.pins import KnownServers

    if expected is not None and not is_fingerprint(expected):
        raise UsageProblem(f"--fingerprint {expected!r} is not of the form SHA256:<43 characters>")
    settings = resolve(server=server, workspace=None, bundle=None, environ=os.environ)
    check_transport(settings.server, insecure_http=insecure_http, warn=_say)
    key = _fetch_key(ctx, settings.server)
    _show_key(settings.server, key)
    if expected is not None and expected != key.fingerprint:
        raise Untrusted(
            f"REFUSING: {settings.server} offers {key.fingerprint}, not {expected}; nothing pinned"
        )
    if expected is None and not yes:
        click.confirm("Trust this key?", abort=True, err=True)
    known = KnownServers.default()
    previous = known.lookup(settings.server)
    known.pin(settings.server, key.fingerprint)
    replaced = f" (replacing {previous})" if previous and previous != key.fingerprint else ""
    _say(f"Pinned {key.fingerprint} for {settings.server} in {known.path}{replaced}.")
    project_pin, project = settings.project_pin, settings.project
    if project_pin is not None and project_pin != key.fingerprint and project is not None:
        _say(
            f"Note: {project.path} pins {project_pin}, which takes precedence here; "
            f"update its server_fingerprint to {key.fingerprint} if this key is right."
        )
