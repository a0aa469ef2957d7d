"""The landing page and the approval page (`/approve/<id>`), the heart of the web UI."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

from flask import Blueprint, Response, request
from pydantic import Field, TypeAdapter

from envcat.bff import backend
from envcat.bff.apiclient import reply_as
from envcat.bff.backend import UpstreamError
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views.audit import request_state
from envcat.bff.views.forms import page, phrase_field, refusal
from envcat.bff.views.grants import grant_policy
from envcat.bff.views.requesters import bundle_requesters
from envcat.bff.views.workspaces import elsewhere, elsewhere_page
from envcat.core.schemas.bundles import BundleDetail, BundleKeyOut, BundleList, BundleSummary
from envcat.core.schemas.passkeys import PasskeyList, WorkspacePolicyOut
from envcat.core.schemas.requests import AccessRequestView, ClientContext, DecisionAccepted
from envcat.core.schemas.team import ApprovalRecorded, ApproversOut
from envcat.core.wire import REQUEST_ID_RE

bp = Blueprint("pages", __name__)

CONTEXT_FIELDS = (
    ("hostname", "Host"),
    ("cwd", "Directory"),
    ("command", "Command"),
    ("git_remote", "Git remote"),
    ("client", "Client"),
)
# An approval's 202: released, or recorded while k-of-n waits for more (issue #17).
APPROVAL_REPLY: TypeAdapter[ApprovalRecorded | DecisionAccepted] = TypeAdapter(
    Annotated[ApprovalRecorded | DecisionAccepted, Field(union_mode="left_to_right")]
)


@dataclass(frozen=True)
class KeyChoice:
    """One checkbox on the approval page."""

    name: str
    is_secret: bool
    required: bool
    checked: bool
    description: str
    library_name: str = ""  # the key's own name when the bundle exports it as `name`


@bp.get("/")
def landing() -> Response:
    """What EnvCat is, and where to go next."""
    return page("landing.html", identity=current_identity())


def pick_bundle(
    bundles: list[BundleSummary],
    chosen_id: str | None,
    *,
    hint_id: str | None = None,
    hint: str | None = None,
) -> BundleSummary | None:
    """The bundle to show: the approver's pick, else the CLI's id or name hint, else the only."""
    by_id = {b.id: b for b in bundles}
    for candidate in (chosen_id, hint_id):
        if candidate and candidate in by_id:
            return by_id[candidate]
    if hint:
        exact = [b for b in bundles if b.name == hint]
        folded = [b for b in bundles if b.name.casefold() == hint.casefold()]
        if exact or len(folded) == 1:
            return (exact or folded)[0]
    return bundles[0] if len(bundles) == 1 else None


def key_choices(
    keys: list[BundleKeyOut], template_keys: list[str], selected: list[str] | None = None
) -> list[KeyChoice]:
    """Checkboxes: the approver's last pick, else the CLI's template keys, else every key.

    Required keys are always checked (and locked on the page). The approver ticks, and
    the CLI receives, the name the bundle exports (issue #19).
    """
    wanted = set(selected if selected is not None else template_keys)
    every = selected is None and not template_keys
    return [
        KeyChoice(
            name=key.export_name,
            is_secret=key.is_secret,
            required=key.required,
            checked=key.required or every or key.export_name in wanted,
            description=key.description,
            library_name=key.name if key.alias else "",
        )
        for key in keys
    ]


def _gone() -> Response:
    return page("approve_gone.html", 404)


def _render_approval(
    request_id: str,
    context: AccessRequestView,
    chosen_id: str | None,
    *,
    error: str | None = None,
    selected: list[str] | None = None,
    status: int = 200,
) -> Response:
    bundles = backend.fetch(BundleList, "/api/v1/bundles").bundles
    chosen = pick_bundle(bundles, chosen_id, hint_id=context.bundle_id, hint=context.bundle)
    detail, approvers = None, None
    if chosen is not None:
        path = backend.api_path("/api/v1/bundles/{id}", id=chosen.id)
        detail = backend.fetch(BundleDetail, path)
        approvers = backend.fetch(ApproversOut, path + "/approvers")
    template_keys = context.template_keys
    choices = key_choices(detail.keys if detail else [], template_keys, selected)
    names = {choice.name for choice in choices}
    return page(
        "approve.html",
        status,
        **_request_fields(request_id, context),
        workload=context.workload,
        requester=context.requester,
        bundles=bundles,
        chosen=chosen,
        choices=choices,
        missing=[k for k in template_keys if chosen and k not in names],
        hint=context.bundle,
        error=error,
        approvers=approvers,
        device=context.device,
        grant_limit=grant_policy(chosen.id).max_hours if chosen else 0,  # issue #17
        members_only=chosen is not None and bundle_requesters(chosen.id) == "members",  # #17
        **passkey_mode(),
    )


def passkey_mode() -> dict[str, bool]:
    """Issue #20: approve with a passkey when the approver has one or the workspace requires it."""
    owned = backend.fetch(PasskeyList, "/api/v1/passkeys").passkeys
    required = backend.fetch(WorkspacePolicyOut, "/api/v1/workspace/policy").require_passkey
    return {"use_passkey": bool(owned) or required, "has_passkey": bool(owned)}


def _passkey_field() -> dict[str, Any]:
    """The assertion the page's script added to the form, if any (issue #20)."""
    statement, credential = (
        request.form.get("passkey_statement"),
        request.form.get("passkey_credential"),
    )
    if not statement or not credential:
        return {}
    try:
        return {
            "passkey": {"statement": json.loads(statement), "credential": json.loads(credential)}
        }
    except ValueError:
        return {"passkey": {"statement": {}, "credential": {}}}  # the api answers 400


def _grant_field() -> dict[str, Any]:
    """Issue #17: "also trust this device for N hours", when ticked."""
    hours = request.form.get("grant_hours", "").strip()
    if request.form.get("grant") != "yes" or not hours:
        return {}
    return {"grant_hours": int(hours) if hours.isdigit() and len(hours) < 4 else 0}


def _context_rows(context: ClientContext) -> list[tuple[str, str]]:
    return [(label, getattr(context, field) or "—") for field, label in CONTEXT_FIELDS]


@bp.get("/approve/<request_id>")
@login_required
def approve(request_id: str) -> Response:
    """Show the phrase, the context, the time left, the bundle and the keys to release."""
    context = backend.public_context(request_id)
    if context is None:
        state = request_state(request_id) if REQUEST_ID_RE.fullmatch(request_id) else None
        return page("approve_gone.html", 404, state=state)
    if context.status != "pending":
        return page("approve_done.html", 409, outcome="decided", state=context.status)
    if (found := elsewhere(context.workspace)) is not None:
        return elsewhere_page(request_id, found)
    if context.kind == "login":  # `envcat login` (issue #16)
        return _render_login(request_id, context)
    return _render_approval(request_id, context, request.args.get("bundle_id"))


def _request_fields(request_id: str, context: AccessRequestView) -> dict[str, Any]:
    """What every approval page shows of a request: phrase, workspace, context, time left.

    The api leaves the phrase out where the workspace requires approvers to type it: the
    page then asks for it instead (`type_phrase`).
    """
    return {
        "identity": current_identity(),
        "request_id": request_id,
        "phrase": context.user_code,
        "type_phrase": context.user_code is None,
        "workspace": context.workspace,
        "details": _context_rows(context.context),
        "seconds_left": max(0, int(context.expires_at - time.time())),
    }


def _render_login(
    request_id: str, context: AccessRequestView, error: str | None = None, status: int = 200
) -> Response:
    return page("approve_login.html", status, error=error, **_request_fields(request_id, context))


def _sign_in(request_id: str) -> Response:
    path = backend.api_path("/api/v1/requests/{id}/sign-in", id=request_id)
    try:
        backend.call("POST", path, json=phrase_field() or None)
    except UpstreamError as exc:
        if exc.status in (404, 410):
            return _gone()
        if exc.status == 409:
            return page("approve_done.html", 409, outcome="decided")
        context = backend.public_context(request_id) if exc.status in (400, 403) else None
        if context is None or context.status != "pending":
            raise
        return _render_login(request_id, context, error=refusal(exc), status=exc.status)
    return page("approve_done.html", outcome="signed_in")


@bp.post("/approve/<request_id>")
@login_required
def decide(request_id: str) -> Response:
    """Approve (encrypt the chosen keys for the CLI) or deny."""
    if not REQUEST_ID_RE.fullmatch(request_id):
        return _gone()
    if request.form.get("decision") == "deny":
        return _deny(request_id)
    if request.form.get("decision") == "sign_in":
        return _sign_in(request_id)
    bundle_id = request.form.get("bundle_id", "")
    include = list(dict.fromkeys(request.form.getlist("include_keys")))
    try:
        reply = backend.call(
            "POST",
            backend.api_path("/api/v1/requests/{id}/encrypt-from-bundle", id=request_id),
            ok=(200, 202),
            json={
                "bundle_id": bundle_id,
                "include_keys": include,
                **_passkey_field(),
                **_grant_field(),
                **phrase_field(),
            },
        )
    except UpstreamError as exc:
        return _refused(request_id, exc, bundle_id, include)
    decision = reply_as(APPROVAL_REPLY, reply)
    if isinstance(decision, ApprovalRecorded):  # k-of-n (issue #17)
        return page("approve_done.html", 202, outcome="recorded", recorded=decision)
    return page("approve_done.html", outcome="approved", count=len(include))


def _deny(request_id: str) -> Response:
    try:
        backend.call("POST", backend.api_path("/api/v1/requests/{id}/deny", id=request_id))
    except UpstreamError as exc:
        context = backend.public_context(request_id) if exc.status == 404 else None
        if context is not None and (found := elsewhere(context.workspace)) is not None:
            return elsewhere_page(request_id, found)
        if exc.status in (404, 410):
            return _gone()
        if exc.status == 409:
            return page("approve_done.html", 409, outcome="decided")
        raise
    return page("approve_done.html", outcome="denied")


def _refused(request_id: str, exc: UpstreamError, bundle_id: str, include: list[str]) -> Response:
    if exc.status == 409:
        return page("approve_done.html", 409, outcome="decided")
    if exc.status not in (400, 403, 404) and exc.code != "busy":
        raise exc
    context = backend.public_context(request_id)
    if context is None:
        return _gone()
    if context.status != "pending":
        return page("approve_done.html", 409, outcome="decided")
    if (found := elsewhere(context.workspace)) is not None:
        return elsewhere_page(request_id, found)
    return _render_approval(
        request_id, context, bundle_id, error=refusal(exc), selected=include, status=exc.status
    )
