"""`envcat plan` and `envcat apply` (issue #16): bundles as code against the server.

Both read `envcat.toml` (`envcat.cli.declared`) and the workspace through the
existing api (bundles, library keys, approver rules, workload policies, members),
signed in with `envcat login` as an admin, or with an admin service token in
$ENVCAT_TOKEN (CI). `plan` prints the changes; `apply`
makes them in order (bundles, keys, approvers, policies, then deletions) and is
idempotent: a second run says "No changes". Deleting anything the file no longer
declares (a bundle, an attached key, a policy) needs `--prune`; without it `apply`
changes nothing at all. A key the library does not hold is refused (values never
live in the file): add it with its value in the web UI first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envcat.cli.declared import (
    CODE_FILE,
    Declaration,
    DeclaredApprovers,
    DeclaredBundle,
    DeclaredKey,
    DeclaredWorkload,
    load,
)
from envcat.cli.display import safe_text
from envcat.cli.errors import CliError, ServerUnreachable

if TYPE_CHECKING:
    import httpx


class Api:
    """The api through the bff, as the signed-in person; every failure is one CliError."""

    def __init__(self, client: httpx.Client, token: str) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, json: Any = None) -> Any:
        """One call; the JSON reply ({} for 204); CliError for anything but 2xx."""
        import httpx

        from envcat.cli.protocol import describe_failure, describe_transport_error

        try:
            reply = self._client.request(method, path, json=json, headers=self._headers)
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the server: {describe_transport_error(exc)}"
            ) from None
        if not reply.is_success:
            raise CliError(f"{method} {path}: {describe_failure(reply)}")
        return reply.json() if reply.content else {}


@dataclass
class Change:
    """One step: `+` add, `~` change, `-` delete; `run` makes it."""

    sign: str
    text: str
    run: Callable[[], object]


@dataclass
class Plan:
    """The steps, the problems that forbid applying, and the bundle ids met so far."""

    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)

    def add(self, sign: str, text: str, run: Callable[[], object]) -> None:
        self.changes.append(Change(sign, text, run))

    @property
    def deletions(self) -> list[Change]:
        return [c for c in self.changes if c.sign == "-"]


class Planner:
    """Compares the declaration with the workspace and builds the plan."""

    def __init__(self, api: Api, declaration: Declaration) -> None:
        self.api, self.declaration, self.plan = api, declaration, Plan()
        self.library = {k["name"]: k["id"] for k in api.call("GET", "/api/v1/keys")["keys"]}
        self.policies: list[dict[str, Any]] = api.call("GET", "/api/v1/workload-policies")["items"]
        self._members: dict[str, str] | None = None

    def members(self) -> dict[str, str]:
        """Email (lower case) → user id, read once and only when the file names people."""
        if self._members is None:
            listed = self.api.call("GET", "/api/v1/members")["members"]
            self._members = {m["email"].lower(): m["user_id"] for m in listed}
        return self._members

    def build(self) -> Plan:
        server = {b["name"]: b["id"] for b in self.api.call("GET", "/api/v1/bundles")["bundles"]}
        self.plan.ids.update(server)
        for bundle in self.declaration.bundles:
            self._bundle(bundle, server.get(bundle.name))
        declared = {b.name for b in self.declaration.bundles}
        for name, bundle_id in server.items():
            if name not in declared:
                path = f"/api/v1/bundles/{bundle_id}"
                self.plan.add("-", f"bundle {name}", partial(self._delete, path))
        return self.plan

    def _delete(self, path: str) -> None:
        self.api.call("DELETE", path)

    def _bundle(self, bundle: DeclaredBundle, bundle_id: str | None) -> None:
        body = {"description": bundle.description, "tags": list(bundle.tags)}
        if bundle_id is None:
            self.plan.add("+", f"bundle {bundle.name}", partial(self._create, bundle, body))
            detail: dict[str, Any] = {"keys": []}
        else:
            detail = self.api.call("GET", f"/api/v1/bundles/{bundle_id}")
            have = {"description": detail["description"], "tags": detail["tags"]}
            if have != body:
                path = f"/api/v1/bundles/{bundle_id}"
                shown = ", ".join(
                    f"{k} {have[k]!r} -> {v!r}" for k, v in body.items() if have[k] != v
                )
                self.plan.add(
                    "~",
                    f"bundle {bundle.name}: {shown}",
                    partial(self.api.call, "PATCH", path, body),
                )
        self._keys(bundle, detail["keys"])
        if bundle.approvers is not None:
            self._approvers(bundle, bundle_id, bundle.approvers)
        if bundle.requesters is not None:
            self._requesters(bundle, bundle_id, bundle.requesters)
        self._workloads(bundle, bundle_id)

    def _create(self, bundle: DeclaredBundle, body: dict[str, Any]) -> None:
        made = self.api.call("POST", "/api/v1/bundles", {"name": bundle.name, **body})
        self.plan.ids[bundle.name] = made["id"]

    def _keys(self, bundle: DeclaredBundle, attached: list[dict[str, Any]]) -> None:
        have = {k["export_name"]: k for k in attached}
        for key in bundle.keys:
            now = have.get(key.export)
            if now is not None and (now["name"], bool(now["required"])) == (
                key.library,
                key.required,
            ):
                continue
            if key.library not in self.library:
                self.plan.problems.append(
                    f"{bundle.name}: key {key.library} is not in the workspace's library; "
                    "add it with its value in the web UI first (values never live in the file)"
                )
                continue
            label = f"{bundle.name} key {key.export}" + (
                f" (from {key.library})" if key.alias else ""
            )
            label += " (required)" if key.required else ""
            if now is None:
                self.plan.add("+", label, partial(self._attach, bundle.name, key))
            else:
                self.plan.add("~", label, partial(self._reattach, bundle.name, key, now))
        declared = {k.export for k in bundle.keys}
        for export, now in have.items():
            if export not in declared:
                run = partial(self._detach, bundle.name, now)
                self.plan.add("-", f"{bundle.name} key {export}", run)

    def _attach(self, bundle: str, key: DeclaredKey) -> None:
        body = {"key_id": self.library[key.library], "required": key.required, "alias": key.alias}
        self.api.call("POST", f"/api/v1/bundles/{self.plan.ids[bundle]}/keys", body)

    def _detach(self, bundle: str, now: dict[str, Any]) -> None:
        self.api.call("DELETE", f"/api/v1/bundles/{self.plan.ids[bundle]}/keys/{now['id']}")

    def _reattach(self, bundle: str, key: DeclaredKey, now: dict[str, Any]) -> None:
        self._detach(bundle, now)  # the api has no PATCH of an attachment: detach, attach
        self._attach(bundle, key)

    def _approvers(
        self, bundle: DeclaredBundle, bundle_id: str | None, wanted: DeclaredApprovers
    ) -> None:
        unknown = [u for u in wanted.users if u not in self.members()]
        if unknown:
            self.plan.problems.append(f"{bundle.name}: approver {unknown[0]} is not a member")
            return
        body = {
            "min_role": wanted.min_role,
            "user_ids": [self.members()[u] for u in wanted.users],
            "approvals_required": wanted.approvals_required,
            "no_self_approval": wanted.no_self_approval,
        }
        if bundle_id is not None:
            have = self.api.call("GET", f"/api/v1/bundles/{bundle_id}/approvers")
            now = {
                "min_role": have["min_role"],
                "user_ids": [u["user_id"] for u in have["users"]],
                "approvals_required": have["approvals_required"],
                "no_self_approval": have.get("no_self_approval", False),
            }
            if not have["is_default"] and _same_rule(now, body):
                return
        shown = f"min_role {wanted.min_role or 'none'}, users {list(wanted.users)}, "
        shown += f"{wanted.approvals_required} approval(s)"
        shown += ", no self-approval" if wanted.no_self_approval else ""
        run = partial(self._put_rule, bundle.name, body)
        self.plan.add("~", f"{bundle.name} approvers: {shown}", run)

    def _put_rule(self, bundle: str, body: dict[str, Any]) -> None:
        self.api.call("PUT", f"/api/v1/bundles/{self.plan.ids[bundle]}/approvers", body)

    def _requesters(self, bundle: DeclaredBundle, bundle_id: str | None, wanted: str) -> None:
        """Who may request the bundle (issue #17): "anyone" with the link or "members"."""
        if bundle_id is not None:
            have = self.api.call("GET", f"/api/v1/bundles/{bundle_id}/requesters")
            if have["requesters"] == wanted:
                return
        elif wanted == "anyone":
            return  # a new bundle is open to anyone already
        run = partial(self._put_requesters, bundle.name, wanted)
        self.plan.add("~", f"{bundle.name} requesters: {wanted}", run)

    def _put_requesters(self, bundle: str, wanted: str) -> None:
        path = f"/api/v1/bundles/{self.plan.ids[bundle]}/requesters"
        self.api.call("PUT", path, {"requesters": wanted})

    def _workloads(self, bundle: DeclaredBundle, bundle_id: str | None) -> None:
        have = {p["name"]: p for p in self.policies if p["bundle_id"] == bundle_id}
        for policy in bundle.workloads:
            now = have.get(policy.name)
            label = f"{bundle.name} workload policy {policy.name!r} ({policy.mode})"
            label += ", may scan" if policy.scan else ""
            if now is None:
                run = partial(self._create_policy, bundle.name, policy)
                self.plan.add("+", label, run)
            elif _policy_fields(now) != _policy_fields(policy.body(now["bundle_id"])):
                path = f"/api/v1/workload-policies/{now['id']}"
                body = policy.body(now["bundle_id"])
                self.plan.add("~", label, partial(self.api.call, "PATCH", path, body))
        declared = {p.name for p in bundle.workloads}
        for name, now in have.items():
            if name not in declared:
                path = f"/api/v1/workload-policies/{now['id']}"
                label = f"{bundle.name} workload policy {name!r}"
                self.plan.add("-", label, partial(self._delete, path))

    def _create_policy(self, bundle: str, policy: DeclaredWorkload) -> None:
        self.api.call("POST", "/api/v1/workload-policies", policy.body(self.plan.ids[bundle]))


def _same_rule(now: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return {**now, "user_ids": sorted(now["user_ids"])} == {
        **wanted,
        "user_ids": sorted(wanted["user_ids"]),
    }


def _policy_fields(policy: dict[str, Any]) -> tuple[Any, ...]:
    rules = [(r["claim"], r["op"], r["value"]) for r in policy["rules"]]
    scan = bool(policy.get("scan", False))
    return (policy["issuer"], policy["audience"], rules, list(policy["keys"]), policy["mode"], scan)


def _say(text: str) -> None:
    click.echo(text, err=True)


@contextlib.contextmanager
def _planned(
    ctx: click.Context, path: Path, server: str | None, workspace: str | None, insecure_http: bool
) -> Iterator[Plan]:
    """Read the file, sign in with the stored token, and plan against the workspace."""
    from envcat.cli.config import resolve_for_command
    from envcat.cli.login import signed_in_token
    from envcat.cli.runtime import client_for

    declaration = load(path)
    settings = resolve_for_command(
        server, workspace or declaration.workspace, None, insecure_http=insecure_http, warn=_say
    )
    slug = settings.require_workspace()
    if declaration.workspace is not None and declaration.workspace != slug:
        raise CliError(f"{path} is for workspace {declaration.workspace}, not {slug}")
    # An admin service token (CI) wins over the terminal's sign-in, as for `envcat get`.
    token = os.environ.get("ENVCAT_TOKEN") or signed_in_token(settings.server, slug)
    if token is None:
        raise CliError(
            f"not signed in to {slug}: run envcat login -w {slug} (as an admin), "
            "or set ENVCAT_TOKEN to an admin service token"
        )
    with client_for(ctx.obj, settings.server) as client:
        api = Api(client, token)
        # The token says which workspace it administers; it must be the one named here.
        if (whose := api.call("GET", "/api/v1/logins/whoami").get("workspace")) != slug:
            raise CliError(f"the token is for workspace {safe_text(str(whose))}, not {slug}")
        plan = Planner(api, declaration).build()
        for problem in plan.problems:
            _say(f"error: {safe_text(problem)}")
        yield plan


def _show(plan: Plan, prune: bool) -> None:
    for change in plan.changes:
        note = "" if change.sign != "-" or prune else "  (needs --prune)"
        click.echo(f"{change.sign} {safe_text(change.text)}{note}")
    if not plan.changes:
        click.echo("No changes: the workspace matches the file.")
        return
    counts = {sign: sum(c.sign == sign for c in plan.changes) for sign in "+~-"}
    click.echo(f"Plan: {counts['+']} to add, {counts['~']} to change, {counts['-']} to delete.")


def _common(function: Callable[..., Any]) -> Callable[..., Any]:
    from envcat.cli.options import check_workspace_option, insecure_http_option, server_option

    decorators: list[Callable[[Any], Any]] = [
        click.option(
            "-f",
            "--file",
            "path",
            type=click.Path(dir_okay=False, path_type=Path),
            default=CODE_FILE,
            show_default=True,
            help="The bundles-as-code file.",
        ),
        click.option(
            "-w",
            "--workspace",
            callback=check_workspace_option,
            metavar="SLUG",
            help="The workspace [default: the file's, $ENVCAT_WORKSPACE, .envcat.toml].",
        ),
        server_option,
        insecure_http_option,
        click.option("--prune", is_flag=True, help="Delete what the file no longer declares."),
        click.pass_context,
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@click.command()
@_common
def plan(
    ctx: click.Context,
    path: Path,
    workspace: str | None,
    server: str | None,
    insecure_http: bool,
    prune: bool,
) -> None:
    """Show how the workspace differs from envcat.toml (nothing is changed).

    Needs `envcat login` (any role that may read; applying needs admin) or an
    admin service token in $ENVCAT_TOKEN. Exit 1
    when the file names a key the library lacks or an approver who is no member.
    """
    with _planned(ctx, path, server, workspace, insecure_http) as planned:
        _show(planned, prune)
    if planned.problems:
        raise CliError("the file cannot be applied as it is (see the errors above)")


@click.command()
@_common
def apply(
    ctx: click.Context,
    path: Path,
    workspace: str | None,
    server: str | None,
    insecure_http: bool,
    prune: bool,
) -> None:
    """Make the workspace match envcat.toml: bundles, keys, approvers, workload policies.

    Idempotent: a second run says "No changes". Deletions (what the file no
    longer declares) need --prune; without it nothing at all is changed. Signed
    in with `envcat login` as an admin, or $ENVCAT_TOKEN (an admin service token).
    """
    with _planned(ctx, path, server, workspace, insecure_http) as planned:
        _show(planned, prune)
        if planned.problems:
            raise CliError("nothing was changed: fix the errors above first")
        if planned.deletions and not prune:
            raise CliError(
                f"nothing was changed: {len(planned.deletions)} deletion(s) need --prune "
                "(or declare them in the file)"
            )
        ordered = [c for c in planned.changes if c.sign != "-"] + planned.deletions
        for done, change in enumerate(ordered):
            try:
                change.run()
            except CliError as exc:
                raise CliError(f"applied {done} of {len(ordered)} changes, then: {exc}") from None
    if planned.changes:
        _say(f"Applied {len(planned.changes)} change(s).")
