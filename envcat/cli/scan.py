"""`envcat scan [PATH] [--git-history]` (issue #19): find secrets before someone else does.

Two kinds of findings: detect-secrets' (high-entropy strings, AWS keys, private keys,
tokens…) and the workspace's own values. For the latter only the SHA-256 of each
candidate string leaves this machine, in batches, with the scanning credential
($ENVCAT_TOKEN, a service token with the "scan" scope; else the terminal's `envcat login`;
or with --oidc a CI job's ID token, fresh for each call); the server answers key names.
Each confirmed own-value leak is then reported, so the server audits it and alerts
the workspace's admins. Exit codes: 0 clean, 1 findings, 2 usage, 4 credential refused,
5 server unreachable, 7 scan failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envcat.cli.errors import CliError, ServerUnreachable, UsageProblem
from envcat.cli.options import check_server_option, check_workspace_option, oidc_options

if TYPE_CHECKING:
    import httpx

    from envcat.cli.scan_detect import Finding, Place
    from envcat.cli.scan_sources import Chunk

EXIT_FINDINGS = 1
EXIT_REFUSED = 4
EXIT_FAILED = 7
MATCHES = "/api/v1/scan/matches"
LEAKS = "/api/v1/scan/leaks"
LEAKS_PER_CALL = 200


class ScanFailed(CliError):
    """git failed or the server answered something unexpected: exit 7 (not 1, "findings")."""

    exit_code = EXIT_FAILED


class CredentialRefused(CliError):
    """The server refused the scanning credential (401, 403, 429): exit 4."""

    exit_code = EXIT_REFUSED


@dataclass
class Credential:
    """The scanning credential: the bearer of each call, and whether only one call can be made
    (a single OIDC ID token: each token is spent by the call it rides on)."""

    next_bearer: Callable[[], str]
    single_call: bool = False


def _say(text: str) -> None:
    click.echo(f"envcat: {text}", err=True)


def _chunks(root: Path, history: bool) -> Iterator[Chunk]:
    from envcat.cli.scan_sources import SourceError, git_history, working_tree

    try:
        yield from (git_history(root) if history else working_tree(root))
    except SourceError as exc:
        raise ScanFailed(str(exc)) from None


def _post(
    client: httpx.Client, path: str, body: dict[str, Any], credential: Credential
) -> dict[str, Any]:
    import httpx

    from envcat.cli.protocol import describe_failure, describe_transport_error

    headers = {"Authorization": f"Bearer {credential.next_bearer()}"}
    try:
        response = client.post(path, json=body, headers=headers)
    except httpx.TransportError as exc:
        raise ServerUnreachable(
            f"cannot reach the EnvCat server: {describe_transport_error(exc)}"
        ) from None
    if response.status_code in (401, 403, 429):
        raise CredentialRefused(describe_failure(response))
    try:
        data = response.json() if response.status_code == 200 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ScanFailed(describe_failure(response))
    return data


def _matched_keys(
    client: httpx.Client, workspace: str, credential: Credential, hashes: list[str], batch: int
) -> dict[str, list[str]]:
    batches = -(-len(hashes) // batch)
    if credential.single_call and batches > 1:
        raise UsageProblem(
            f"{len(hashes)} candidate hashes need {batches} calls of --batch-size {batch}, but "
            "ENVCAT_ID_TOKEN or --id-token-file gives one ID token, good for one call: raise "
            "--batch-size (up to the server's limit) or let GitHub Actions mint one per call"
        )
    matched: dict[str, list[str]] = {}
    for start in range(0, len(hashes), batch):
        body = {"workspace": workspace, "hashes": hashes[start : start + batch]}
        for item in _post(client, MATCHES, body, credential).get("matches", []):
            if isinstance(item, dict) and item.get("sha256") in hashes:
                matched[str(item["sha256"])] = [str(name) for name in item.get("keys", [])]
    return matched


def _report(
    client: httpx.Client, workspace: str, credential: Credential, leaks: list[dict[str, Any]]
) -> None:
    if credential.single_call:
        _say(
            "the leaks found were not reported to the server (no alert raised): the one ID "
            "token given was spent on the lookup; let GitHub Actions mint one per call"
        )
        return
    for start in range(0, len(leaks), LEAKS_PER_CALL):
        body = {"workspace": workspace, "leaks": leaks[start : start + LEAKS_PER_CALL]}
        alerted = _post(client, LEAKS, body, credential).get("alerted", 0)
        if alerted:
            _say(f"{alerted} new leak alert(s) raised in the workspace; rotate the keys named.")


def _own_values(
    places: dict[str, list[Place]], server: str, workspace: str, credential: Credential, batch: int
) -> list[Finding]:
    from envcat.cli.protocol import make_client
    from envcat.cli.scan_detect import OWN_VALUE_RULE, Finding

    with make_client(server) as client:
        matched = _matched_keys(client, workspace, credential, sorted(places), batch)
        findings: list[Finding] = []
        leaks: list[dict[str, Any]] = []
        for digest, names in matched.items():
            for place in places[digest]:
                leak = {"sha256": digest, "path": place.path, "line": place.line}
                leaks.append({**leak, "commit": place.commit})
                findings.extend(
                    Finding(
                        OWN_VALUE_RULE,
                        "EnvCat workspace value",
                        place.path,
                        place.line,
                        place.commit,
                        place.masked,
                        name,
                    )
                    for name in names
                )
        if leaks:
            _report(client, workspace, credential, leaks)
    return findings


def _credential(
    server: str, workspace: str | None, oidc: bool, audience: str | None, token_file: Path | None
) -> Credential | None:
    """--oidc, else $ENVCAT_TOKEN, else this terminal's `envcat login` token, else None."""
    if oidc:
        from envcat.cli.oidc import IdTokens

        tokens = IdTokens(os.environ, audience or server, token_file)
        return Credential(tokens.next, single_call=not tokens.repeatable)
    token = os.environ.get("ENVCAT_TOKEN") or None
    if token is None and workspace is not None:
        from envcat.cli.login import signed_in_token

        token = signed_in_token(server, workspace)
    if token is None:
        return None
    return Credential(lambda: token)


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(
        set(findings), key=lambda f: (f.path, f.line, f.commit or "", f.rule, f.key or "")
    )


@click.command("scan")
@click.argument(
    "path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path(".")
)
@click.option("--git-history", is_flag=True, help="Scan every commit of every branch and ref.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "sarif"]),
    default="table",
    show_default=True,
    help="table for people, json for scripts, sarif for GitHub code scanning.",
)
@click.option("--server", callback=check_server_option, metavar="URL", help="The EnvCat server.")
@click.option(
    "-w", "--workspace", callback=check_workspace_option, help="The workspace whose values to find."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    help="Hashes per call to the server.",
)
@click.option("--offline", is_flag=True, help="Do not ask the server; detect-secrets only.")
@oidc_options
def scan(
    path: Path,
    git_history: bool,
    fmt: str,
    server: str | None,
    workspace: str | None,
    batch_size: int,
    offline: bool,
    oidc: bool,
    audience: str | None,
    id_token_file: Path | None,
) -> None:
    """Find likely secrets and the workspace's own values in PATH (default: here).

    Without --git-history the working tree is read (inside a git repository,
    .gitignore is respected); binaries and files over 1 MiB are skipped. With it,
    every line any commit on any ref added is read, deleted files included.

    The workspace's own values are found without downloading them: only the
    SHA-256 of each candidate string (12+ characters) is sent, with a credential:
    $ENVCAT_TOKEN (a service token with the "scan" scope), else this terminal's
    `envcat login` (members and above), or with --oidc the CI job's ID token (a
    trust policy with the scan permission; one fresh token per call). Each leak
    found is audited and notified by the server, naming the key, never its value.

    \b
    Exit codes: 0 nothing found, 1 findings, 2 usage error, 4 credential refused,
    5 server unreachable, 7 scan failed (git, or an unexpected server reply).
    """
    from envcat.cli.config import resolve
    from envcat.cli.scan_detect import candidates, detect
    from envcat.cli.scan_report import as_json, as_sarif, table

    if offline and (oidc or audience or id_token_file):
        raise click.UsageError("--offline asks no server: drop --oidc")
    if not oidc and (audience is not None or id_token_file is not None):
        raise click.UsageError("--audience and --id-token-file go with --oidc")
    settings = resolve(server=server, workspace=workspace, bundle=None, environ=os.environ)
    credential = (
        None
        if offline
        else _credential(settings.server, settings.workspace, oidc, audience, id_token_file)
    )
    online = credential is not None
    if online:
        settings.require_workspace()
    elif not offline:
        _say(
            "no credential ($ENVCAT_TOKEN, envcat login, or --oidc): the workspace's own "
            "values are not checked (detect-secrets only)"
        )
    findings: list[Finding] = []
    places: dict[str, list[Place]] = {}
    for chunk in _chunks(path, git_history):
        findings.extend(detect(chunk))
        if online:
            for digest, place in candidates(chunk):
                places.setdefault(digest, []).append(place)
    if online and places:
        assert credential is not None and settings.workspace is not None  # noqa: S101  # online
        findings.extend(
            _own_values(places, settings.server, settings.workspace, credential, batch_size)
        )
    findings = _dedupe(findings)
    if fmt == "json":
        click.echo(as_json(findings, own_values_checked=online), nl=False)
    elif fmt == "sarif":
        click.echo(as_sarif(findings), nl=False)
    else:
        click.echo(table(findings), nl=False)
    if findings:
        raise SystemExit(EXIT_FINDINGS)
