"""Which workspace a request is for, and switching to it (issue #11).

A request names its workspace; only that workspace's members can decide it,
and the api answers anyone else as if the request did not exist. So the
approval page checks first and says so in plain words, and a member of several
workspaces can switch to the right one (local accounts; Clerk users switch
organisation in Clerk's own menu).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, request
from werkzeug.utils import redirect
from werkzeug.wrappers import Response as BaseResponse

from envcat.bff import backend
from envcat.bff.apiclient import Signer, reply_as
from envcat.bff.identity import current_identity, login_required, start_session
from envcat.bff.runtime import runtime
from envcat.bff.views.forms import page
from envcat.core.schemas.accounts import AccountOut, TenantOut
from envcat.core.schemas.workspaces import WorkspaceList
from envcat.core.signing import ID_PATTERN

bp = Blueprint("workspaces", __name__)


@dataclass(frozen=True)
class Elsewhere:
    """A request for a workspace other than the one the person acts in."""

    wanted: str  # the request's workspace slug
    current: str
    member_of: TenantOut | None  # the wanted workspace, when the person belongs to it


def elsewhere(wanted: str) -> Elsewhere | None:
    """None when a request for workspace `wanted` is for the one the person acts in, else
    what to show."""
    listed = backend.fetch(WorkspaceList, "/api/v1/workspaces")
    if wanted == listed.current:
        return None
    match = next((w for w in listed.workspaces if w.slug == wanted), None)
    return Elsewhere(wanted=wanted, current=listed.current, member_of=match)


def elsewhere_page(request_id: str, found: Elsewhere) -> Response:
    """The plain-words page: for another workspace, and how to switch when one may."""
    return page(
        "approve_elsewhere.html",
        404,
        request_id=request_id,
        wanted=found.wanted,
        current=found.current,
        member_of=found.member_of,
    )


@bp.post("/workspaces/switch")
@login_required
def switch() -> BaseResponse:
    """Act in another workspace of one's own (local accounts), then go back where one was."""
    identity = current_identity()
    tenant_id = request.form.get("tenant_id", "")
    back = request.form.get("next", "/bundles")
    if not back.startswith("/") or back.startswith("//"):
        back = "/bundles"
    is_local = runtime().settings.auth_provider == "local"
    if identity is None or not is_local or not ID_PATTERN.fullmatch(tenant_id):
        return redirect(back, code=303)  # Clerk: the organisation switcher is Clerk's own
    signer = Signer(identity.user_id, tenant_id)
    reply = backend.timed_send("GET", "/api/v1/me", signer=signer, kind="page")
    if reply.status_code != 200:  # not a member there: the same page, nothing changes
        return redirect(back, code=303)
    start_session(reply_as(AccountOut, reply))
    return redirect(back, code=303)
