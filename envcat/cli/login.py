"""`envcat login`, `envcat logout` and `envcat whoami` (issue #16).

`login` asks the server for a sign-in request and shows its link, QR code and
phrase exactly as `envcat get` does; a member who opens the link and approves
"sign in this terminal" gets a short-lived user token minted, sealed to this
run's one-time X25519 key. The token is kept per server and workspace in the OS
keyring or a 0600 file (`envcat.cli.tokens`); `get` and `run` then name the
requester, and `plan`/`apply` act as that person. `logout` revokes it on the
server and deletes it here.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from envcat.cli.errors import Cancelled, CliError
from envcat.cli.options import (
    check_workspace_option,
    insecure_http_option,
    server_option,
)
from envcat.cli.tokens import STORE_CHOICES, STORE_ENV, StoredLogin

F = TypeVar("F", bound=Callable[..., Any])

WHOAMI = "/api/v1/logins/whoami"
LOGOUT = "/api/v1/logins/logout"

workspace_option = click.option(
    "-w",
    "--workspace",
    callback=check_workspace_option,
    metavar="SLUG",
    help="The workspace to sign in to [default: $ENVCAT_WORKSPACE, .envcat.toml, user config].",
)
store_option = click.option(
    "--token-store",
    type=click.Choice(STORE_CHOICES),
    envvar=STORE_ENV,
    help="Where the token is kept: the OS keyring, a 0600 file in the config directory, "
    "or auto (keyring when usable)  [default: $ENVCAT_TOKEN_STORE, auto].",
)


def _say(text: str) -> None:
    click.echo(text, err=True)


def _settings(server: str | None, workspace: str | None, insecure_http: bool) -> Any:
    from envcat.cli.config import resolve_for_command

    return resolve_for_command(server, workspace, None, insecure_http=insecure_http, warn=_say)


def bearer_call(
    ctx: click.Context, server: str, method: str, path: str, token: str
) -> tuple[int, dict[str, Any]]:
    """One call with the terminal's token; (status, JSON object or {})."""
    import httpx

    from envcat.cli.protocol import describe_transport_error
    from envcat.cli.runtime import client_for

    with client_for(ctx.obj, server) as client:
        try:
            response = client.request(method, path, headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError as exc:
            from envcat.cli.errors import ServerUnreachable

            raise ServerUnreachable(
                f"cannot reach the EnvCat server at {server}: {describe_transport_error(exc)}"
            ) from None
    try:
        data = response.json() if response.content else {}
    except ValueError:
        data = {}
    return response.status_code, data if isinstance(data, dict) else {}


@click.command()
@workspace_option
@server_option
@insecure_http_option
@click.option("--no-qr", is_flag=True, help="Do not draw the QR code on the terminal.")
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    metavar="SECONDS",
    help="Stop waiting after this long (default: until the request expires).",
)
@store_option
@click.pass_context
def login(
    ctx: click.Context,
    workspace: str | None,
    server: str | None,
    insecure_http: bool,
    no_qr: bool,
    timeout: int | None,
    token_store: str | None,
) -> None:
    """Sign this terminal in to a workspace, as the person who approves in the browser.

    Shows a link, a QR code and a verification phrase; open the link while signed in
    to EnvCat, check the phrase, and choose "Sign in this terminal". The token is
    sealed to this run's one-time key, lives USER_TOKEN_HOURS (12 h by default) and is
    kept in the OS keyring, or in a 0600 file in the config directory when no keyring
    is usable. Requests from `envcat get` then show "requested by <you>"; `envcat
    plan` and `envcat apply` act as you.
    """
    from envcat.cli import tokens
    from envcat.cli.display import Terminal, safe_text
    from envcat.cli.flow import ApprovalFlow, Hints
    from envcat.cli.protocol import make_client
    from envcat.cli.runtime import runtime_from
    from envcat.core.sealing import SealingError, open_values

    settings = _settings(server, workspace, insecure_http)
    hints = Hints(
        workspace=settings.require_workspace(),
        bundle=None,
        template_keys=(),
        command=["envcat", "login"],
        login=True,
    )
    runtime = runtime_from(ctx.obj)
    interactive = sys.stderr.isatty() if runtime.interactive is None else runtime.interactive
    terminal = Terminal(sys.stderr, interactive=interactive, show_qr=not no_qr)
    with contextlib.ExitStack() as stack:
        client = runtime.client or stack.enter_context(make_client(settings.server))
        try:
            sealed = ApprovalFlow(client, terminal, runtime.clock).fetch(hints, timeout)
        except KeyboardInterrupt:
            raise Cancelled() from None
    try:
        payload = open_values(sealed.private_key, sealed.ciphertext)
        stored = tokens.StoredLogin(
            token=payload["token"], workspace=payload["workspace"], expires_at=payload["expires_at"]
        )
    except (SealingError, KeyError, ValueError):
        raise CliError(
            "the server's sign-in reply does not open with this terminal's key"
        ) from None
    if stored.workspace != hints.workspace:
        raise CliError("the server signed this terminal in to another workspace; refusing it")
    where = tokens.save(settings.server, stored, token_store)
    status, me = bearer_call(ctx, settings.server, "GET", WHOAMI, stored.token)
    who = safe_text(str(me.get("email") or "?"), 120) if status == 200 else "?"
    _say(
        f"Signed in to {safe_text(stored.workspace, 80)} as {who} until "
        f"{stored.expires_at[:16].replace('T', ' ')} UTC (token kept in the {where} store)."
    )


def _signed_in_options(function: F) -> F:
    """-w, --server, --insecure-http, --token-store and the context: logout and whoami."""
    decorators: list[Callable[[Any], Any]] = [
        workspace_option,
        server_option,
        insecure_http_option,
        store_option,
        click.pass_context,
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _stored(
    workspace: str | None, server: str | None, insecure_http: bool, token_store: str | None
) -> tuple[str, str, StoredLogin | None]:
    """(server, workspace slug, the stored sign-in or None)."""
    from envcat.cli import tokens

    settings = _settings(server, workspace, insecure_http)
    slug = settings.require_workspace()
    return settings.server, slug, tokens.load(settings.server, slug, token_store)


@click.command()
@_signed_in_options
def logout(
    ctx: click.Context,
    workspace: str | None,
    server: str | None,
    insecure_http: bool,
    token_store: str | None,
) -> None:
    """Revoke this terminal's sign-in on the server and delete it here."""
    from envcat.cli import tokens

    server, slug, stored = _stored(workspace, server, insecure_http, token_store)
    if stored is None:
        _say(f"This terminal is not signed in to {slug}.")
        return
    status, _ = bearer_call(ctx, server, "POST", LOGOUT, stored.token)
    tokens.forget(server, slug, token_store)
    if status not in (204, 401):
        raise CliError(f"deleted here, but the server answered HTTP {status} to the revocation")
    _say(f"Signed out of {slug}: the token is revoked and deleted from this terminal.")


@click.command()
@_signed_in_options
def whoami(
    ctx: click.Context,
    workspace: str | None,
    server: str | None,
    insecure_http: bool,
    token_store: str | None,
) -> None:
    """Print who this terminal is signed in as (exit 1 when it is not)."""
    from envcat.cli.display import safe_text

    server, slug, stored = _stored(workspace, server, insecure_http, token_store)
    if stored is None or stored.is_expired():
        raise CliError(f"not signed in to {slug} (run envcat login)")
    status, me = bearer_call(ctx, server, "GET", WHOAMI, stored.token)
    if status != 200:
        raise CliError(f"the sign-in to {slug} was revoked or has expired (run envcat login)")
    click.echo(
        f"{safe_text(str(me.get('email')), 120)} in {safe_text(str(me.get('workspace')), 80)} "
        f"({safe_text(str(me.get('role')), 20)}), until "
        f"{str(me.get('expires_at'))[:16].replace('T', ' ')} UTC"
    )


def signed_in_token(server: str, workspace: str) -> str | None:
    """The stored, unexpired token for this server and workspace, if any (for `get`, `apply`)."""
    from envcat.cli import tokens

    try:
        stored = tokens.load(server, workspace)
    except CliError:
        return None  # an unreadable store: ask as a terminal that is not signed in
    return stored.token if stored is not None and not stored.is_expired() else None
