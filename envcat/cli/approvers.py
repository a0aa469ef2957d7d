"""Passkey-signed approvals the CLI checks itself (issue #20), and `envcat approvers`.

When `.envcat.toml` lists `approvers`, a delivery is accepted only if it
carries a WebAuthn assertion by one of those passkeys over the approval
statement this CLI rebuilds from what it asked (request id, its public key,
workspace slug, the phrase it showed) and what it received (bundle id, the names
actually delivered, decided_at, and the break-glass reason when the delivery
says it is one), made for the configured server's origin with the user
verified. For k-of-n it needs valid assertions by k different listed
people, k being the higher of the project's `min_approvals` and the number the
envelope states. A compromised server can still refuse or stall; it cannot make
this terminal accept values fewer listed people approved.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import click

from envcat.cli.display import safe_text
from envcat.cli.errors import CliError, ServerUnreachable, Untrusted, UsageProblem
from envcat.cli.options import check_workspace_option, insecure_http_option, server_option
from envcat.core.wire import unattended_allow_list

if TYPE_CHECKING:
    import httpx

    from envcat.cli.config import Settings, TrustedApprover
    from envcat.core.envelope import Envelope
    from envcat.core.passkeys import PasskeyProof


def check_passkey_approval(
    envelope: Envelope,
    *,
    request_id: str,
    cli_public_key: str,
    workspace: str,
    server: str,
    approvers: Sequence[TrustedApprover],
    min_approvals: int = 1,
) -> list[PasskeyProof]:
    """Return the verified proofs, one per person counted; raise Untrusted naming what failed.

    k is the higher of `min_approvals` (this project's) and the number the envelope
    says the bundle's rule required: the server may state more, never fewer. Every
    assertion by a listed passkey must verify; each listed person counts once, however
    many of their passkeys or copies of one assertion the envelope carries; an unlisted
    passkey counts for nothing.
    """
    from envcat.core.passkeys import PasskeyError, PasskeyProof

    offered = envelope.passkey_proofs()
    if not offered:
        raise Untrusted(
            "refusing the delivery: .envcat.toml lists approvers, but this approval carries "
            "no passkey signature"
        )
    need = max(min_approvals, envelope.approvals_required)
    reason = _break_glass_reason(envelope)
    listed = {approver.credential_id: approver for approver in approvers}
    counted: dict[str, PasskeyProof] = {}
    unlisted: list[str] = []
    for item in offered:
        try:
            proof = PasskeyProof.from_dict(item)
        except PasskeyError as exc:
            raise Untrusted(f"refusing the delivery: {exc}") from None
        approver = listed.get(proof.credential_id)
        if approver is None:
            unlisted.append(safe_text(proof.credential_id, 40))
            continue
        _verify_proof(
            proof,
            approver,
            envelope,
            request_id,
            cli_public_key,
            workspace,
            server,
            break_glass=reason,
        )
        counted.setdefault(approver.holder, proof)
    if len(counted) >= need:
        return list(counted.values())
    if need == 1:
        raise Untrusted(
            "refusing the delivery: it was approved with a passkey that .envcat.toml does not "
            f"list ({', '.join(unlisted)})"
        )
    raise Untrusted(
        f"refusing the delivery: it needs passkey approvals by {need} different approvers "
        f"listed in .envcat.toml and carries {len(counted)}"
        + (f" (and passkeys .envcat.toml does not list: {', '.join(unlisted)})" if unlisted else "")
    )


def _break_glass_reason(envelope: Envelope) -> str:
    """The reason a break-glass delivery states, "" for any other; Untrusted when unusable.

    A passkey signs a break-glass release's reason (issue #17/#20), so a marker whose
    reason no approval statement can carry (empty, several lines, too long) is refused.
    """
    from envcat.core.approval_statement import StatementError, check_reason

    if envelope.break_glass is None:
        return ""
    try:
        return check_reason(envelope.break_glass.get("reason"))
    except StatementError as exc:
        raise Untrusted(
            f"refusing the delivery: it says break-glass, but the signed statement does not "
            f"match it: {exc}"
        ) from None


def _break_glass_difference(signed: str, delivered: str) -> str:
    """How a signed statement's break-glass reason differs from the delivery's ("" if not)."""
    if signed == delivered:
        return ""
    if not signed:
        return "the passkey approved an ordinary release, and the delivery says break-glass"
    if not delivered:
        return "the passkey signed a break-glass release, and the delivery does not say so"
    return "the delivery's break-glass reason is not the one the passkey signed"


def _verify_proof(
    proof: PasskeyProof,
    approver: TrustedApprover,
    envelope: Envelope,
    request_id: str,
    cli_public_key: str,
    workspace: str,
    server: str,
    *,
    break_glass: str,
) -> None:
    """Check one assertion over the statement this CLI rebuilds; Untrusted when it fails.

    `break_glass` is the delivery's break-glass reason ("" when it is not one): the
    statement is rebuilt with it, so a reason the passkey did not sign, or a marker
    added to or taken from what it signed, does not verify.
    """
    from envcat.cli.config import origin
    from envcat.core.approval_statement import ApprovalStatement
    from envcat.core.passkeys import PasskeyError, b64decode, load_public_key, verify_assertion
    from envcat.core.usercode import user_code

    rebuilt = ApprovalStatement.of(
        request_id=request_id,
        cli_public_key=cli_public_key,
        workspace=workspace,
        bundle_id=envelope.bundle_id,
        keys=envelope.keys,
        user_code=user_code(request_id, cli_public_key),
        decided_at=proof.statement.decided_at,  # each voter signed at their own time
        break_glass=break_glass,
    )
    # The statement the envelope repeats is the server's word; the challenge check below
    # decides. This only names the difference when the server left the statement as signed.
    if difference := _break_glass_difference(proof.statement.break_glass, break_glass):
        raise Untrusted(
            f"refusing the delivery: the passkey approval by {safe_text(approver.name, 60)!r} "
            f"fails: the signed statement does not match this delivery: {difference}"
        )
    try:
        key = load_public_key(b64decode(approver.public_key))
        verify_assertion(
            proof,
            key,
            challenge=rebuilt.challenge(),
            origin=origin(server),
            rp_id=(urlsplit(server).hostname or "").lower(),
        )
    except PasskeyError as exc:
        raise Untrusted(
            f"refusing the delivery: the passkey approval by {safe_text(approver.name, 60)!r} "
            f"fails: {exc}"
        ) from None


class PasskeyCheck:
    """The check `verify_delivery` runs before it pins anything, for one request."""

    def __init__(self, request_id: str, cli_public_key: str, settings: Settings) -> None:
        self._request_id, self._cli_public_key = request_id, cli_public_key
        self._settings = settings
        self.verified: list[PasskeyProof] = []

    def __call__(self, envelope: Envelope) -> None:
        settings = self._settings
        # a workload or service token (#16), or a device grant (#17): nobody approved just now
        if (allow_list := unattended_allow_list(envelope.approver_id)) is not None:
            if envelope.bundle_name in settings.allowed_unattended(allow_list):
                return  # the project accepts these deliveries for this bundle
            raise Untrusted(
                f"refusing the delivery: {safe_text(envelope.approver_email, 120)} (not a "
                f"person, just now) approved it, and .envcat.toml lists passkey approvers; add "
                f"{safe_text(envelope.bundle_name, 120)!r} to {allow_list} to accept "
                "such deliveries of that bundle"
            )
        self.verified = check_passkey_approval(
            envelope,
            request_id=self._request_id,
            cli_public_key=self._cli_public_key,
            workspace=settings.require_workspace(),
            server=settings.server,
            approvers=settings.approvers,
            min_approvals=settings.min_approvals(envelope.bundle_name),
        )

    def summary(self) -> str:
        """What was verified, for the line after the check."""
        count = len(self.verified)
        if count == 1:
            return "passkey approval verified (signed by an approver listed in .envcat.toml)"
        return (
            f"{count} passkey approvals verified (by {count} different approvers listed in "
            ".envcat.toml)"
        )


# ---- envcat approvers list / add ------------------------------------------------------


def _client(ctx: click.Context, server: str) -> contextlib.AbstractContextManager[httpx.Client]:
    from envcat.cli.runtime import client_for

    return client_for(ctx.obj, server)


def _settings(server: str | None, workspace: str | None, insecure_http: bool) -> Settings:
    from envcat.cli.config import check_transport, resolve

    settings = resolve(server=server, workspace=workspace, bundle=None, environ=os.environ)
    settings.require_workspace()
    check_transport(settings.server, insecure_http=insecure_http, warn=_say)
    return settings


def _say(text: str) -> None:
    click.echo(text, err=True)


def fetch_approvers(client: httpx.Client, workspace: str) -> list[dict[str, str]]:
    """The server's list of the workspace's passkeys, each with a fingerprint WE computed."""
    import httpx

    from envcat.cli.protocol import describe_failure, describe_transport_error
    from envcat.core.passkeys import PasskeyError, b64decode, key_fingerprint, load_public_key

    try:
        response = client.get(f"/api/v1/workspaces/{quote(workspace, safe='')}/approvers")
    except httpx.TransportError as exc:
        raise ServerUnreachable(
            f"cannot reach the EnvCat server: {describe_transport_error(exc)}"
        ) from None
    if response.status_code != 200:
        raise CliError(describe_failure(response))
    try:
        items = response.json()["approvers"]
        listed = []
        for item in items:
            key = load_public_key(b64decode(str(item["public_key"])))
            listed.append(
                {
                    "name": str(item["name"]),
                    "credential_id": str(item["credential_id"]),
                    "public_key": str(item["public_key"]),
                    "fingerprint": key_fingerprint(key),
                }
            )
    except (ValueError, KeyError, TypeError, PasskeyError):
        raise CliError("the server's list of approvers is malformed") from None
    return listed


@click.group()
def approvers() -> None:
    """Passkeys whose signature every delivery must carry (.envcat.toml `approvers`)."""


@approvers.command("list")
@server_option
@click.option(
    "-w", "--workspace", callback=check_workspace_option, metavar="SLUG", help="Workspace slug."
)
@insecure_http_option
@click.pass_context
def list_approvers(
    ctx: click.Context, server: str | None, workspace: str | None, insecure_http: bool
) -> None:
    """Show the passkeys of the workspace's members: name, credential id, fingerprint.

    The list comes from the server, which is not trusted for it: compare each
    fingerprint with the one its owner sees on their account page before adding it.
    """
    settings = _settings(server, workspace, insecure_http)
    trusted = {approver.credential_id for approver in settings.approvers}
    with _client(ctx, settings.server) as client:
        listed = fetch_approvers(client, settings.require_workspace())
    if not listed:
        _say(f"No member of {settings.workspace} has registered a passkey yet.")
    for item in listed:
        mark = "*" if item["credential_id"] in trusted else " "
        click.echo(
            f"{mark} {safe_text(item['name'], 60)}\t{safe_text(item['credential_id'], 200)}"
            f"\t{item['fingerprint']}"
        )
    if trusted:
        _say("* = listed in .envcat.toml")
    if listed:  # an id may start with "-", which click would read as an option
        _say("add one with: envcat approvers add -- CREDENTIAL_ID")


@approvers.command("add")
@click.argument("credential_id")
@server_option
@click.option(
    "-w", "--workspace", callback=check_workspace_option, metavar="SLUG", help="Workspace slug."
)
@click.option("--yes", is_flag=True, help="Add without asking (after showing the fingerprint).")
@click.option(
    "--person",
    metavar="NAME",
    help="Whose passkey it is: one person's passkeys count once toward min_approvals.",
)
@insecure_http_option
@click.pass_context
def add_approver(
    ctx: click.Context,
    credential_id: str,
    server: str | None,
    workspace: str | None,
    yes: bool,
    person: str | None,
    insecure_http: bool,
) -> None:
    """Add one of the workspace's passkeys to .envcat.toml's approvers.

    From then on every delivery in this project must carry a passkey signature
    by a listed approver. Check the fingerprint with the passkey's owner first.
    A credential id may start with '-': write `envcat approvers add -- ID`.
    """
    settings = _settings(server, workspace, insecure_http)
    project = settings.project
    if project is None:
        raise UsageProblem("no .envcat.toml here or above: run `envcat init` first")
    if any(approver.credential_id == credential_id for approver in project.approvers):
        raise UsageProblem(f"{project.path} already lists that passkey")
    with _client(ctx, settings.server) as client:
        listed = fetch_approvers(client, settings.require_workspace())
    found = next((item for item in listed if item["credential_id"] == credential_id), None)
    if found is None:
        raise CliError(f"no passkey with that credential id in workspace {settings.workspace}")
    _say(f"Passkey {safe_text(found['name'], 60)!r}: fingerprint {found['fingerprint']}")
    if not yes:
        click.confirm("Trust approvals signed by this passkey?", abort=True, err=True)
    _append(project.path, {**found, "person": person.strip()} if person else found)
    _say(f"Added {safe_text(found['name'], 60)!r} to the approvers in {project.path}.")


def _append(path: Path, item: dict[str, Any]) -> None:
    import json

    text = path.read_text(encoding="utf-8")
    if re.search(r"(?m)^\s*approvers\s*=", text):
        raise UsageProblem(
            f"{path} lists approvers inline; add this one by hand: "
            f"{{ name = {json.dumps(item['name'])}, credential_id = "
            f"{json.dumps(item['credential_id'])}, public_key = {json.dumps(item['public_key'])} }}"
        )
    block = (
        ("" if text.endswith("\n") else "\n")
        + f"\n# a passkey trusted to approve; added {time.strftime('%Y-%m-%d')}, "
        + f"fingerprint {item['fingerprint']}\n[[approvers]]\n"
        + "".join(
            f"{name} = {json.dumps(item[name], ensure_ascii=False)}\n"
            for name in ("name", "person", "credential_id", "public_key")
            if name in item
        )
    )
    try:
        with path.open("a", encoding="utf-8") as stream:
            stream.write(block)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
