"""Options shared by the CLI's commands, and their click callbacks (click only at import)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from envcat.cli.config import DEFAULT_SERVER, is_web_url

FORMAT_CHOICES = ("sh", "fish", "dotenv", "json", "docker", "github")
F = TypeVar("F", bound=Callable[..., Any])


def check_server_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """Click callback: an http(s) URL without a trailing slash, or None (resolve later)."""
    if value is not None and not is_web_url(value):
        raise click.BadParameter("expected an http:// or https:// URL, e.g. https://envcat.example")
    return value.rstrip("/") if value is not None else None


def check_workspace_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """Click callback: a well-formed workspace slug, or None."""
    from envcat.core.wire import WORKSPACE_SLUG_RULE, is_workspace_slug

    if value is not None and not is_workspace_slug(value):
        raise click.BadParameter(f"{value!r} is not a workspace slug ({WORKSPACE_SLUG_RULE})")
    return value


def check_write_path(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Click callback: --write PATH can be written (no symlink, directory exists)."""
    from envcat.cli.output import resolve_write_target

    if value is not None:  # fail before anyone is asked to approve, not after
        try:
            resolve_write_target(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def check_names(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> list[str]:
    """Click callback: every value is a variable name (-k, --allow-var)."""
    from envcat.cli.formats import is_valid_name
    from envcat.core.wire import KEY_NAME_RE

    for name in value:
        if not is_valid_name(name):
            raise click.BadParameter(f"{name!r} is not a variable name ({KEY_NAME_RE.pattern})")
    return list(value)


def _apply(function: F, decorators: Sequence[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


server_option = click.option(
    "--server",
    callback=check_server_option,
    metavar="URL",
    help=f"The EnvCat server [default: $ENVCAT_SERVER, .envcat.toml, user config, "
    f"{DEFAULT_SERVER}].",
)
insecure_http_option = click.option(
    "--insecure-http",
    is_flag=True,
    help="Allow plain http:// to a host other than this machine (not recommended).",
)


def hint_options(function: F) -> F:
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
                callback=check_names,
                help="A key to ask for; repeat for more. Anything else delivered is refused.",
            ),
            click.option(
                "-w",
                "--workspace",
                callback=check_workspace_option,
                metavar="SLUG",
                help="The workspace that must approve "
                "[default: $ENVCAT_WORKSPACE, .envcat.toml, user config].",
            ),
            click.option(
                "--allow-var",
                "allow_vars",
                multiple=True,
                metavar="NAME",
                callback=check_names,
                help="Accept this delivered name although it can change how programs run "
                "(LD_PRELOAD, PATH, …); repeat for more.",
            ),
        ],
    )


def wait_options(function: F) -> F:
    """--server, --insecure-http, --no-qr and --timeout: where to ask and how to wait."""
    return _apply(
        function,
        [
            server_option,
            insecure_http_option,
            click.option("--no-qr", is_flag=True, help="Do not draw the QR code on the terminal."),
            click.option(
                "--timeout",
                type=click.IntRange(min=1),
                metavar="SECONDS",
                help="Stop waiting after this long (default: until the request expires).",
            ),
        ],
    )


def oidc_options(function: F) -> F:
    """--oidc, --audience and --id-token-file: ask as a CI workload (issue #16)."""
    return _apply(
        function,
        [
            click.option(
                "--oidc",
                is_flag=True,
                help="Ask as a CI workload with its OIDC ID token; a trust policy of the "
                "workspace may approve at once (no link, no person).",
            ),
            click.option(
                "--audience",
                metavar="AUD",
                help="The audience to ask GitHub's token service for "
                "[default: the server URL]; must match the trust policy.",
            ),
            click.option(
                "--id-token-file",
                type=click.Path(dir_okay=False, path_type=Path),
                metavar="FILE",
                help="Read the ID token from FILE [default: $ENVCAT_ID_TOKEN, then GitHub "
                "Actions' ACTIONS_ID_TOKEN_REQUEST_URL].",
            ),
        ],
    )
