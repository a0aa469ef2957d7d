"""Groups (teams) page and the approval page's break-glass form (issue #17). Thin: forms in,
one api call, a page or a redirect out."""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from envcat.bff import backend
from envcat.bff.backend import UpstreamError, api_path
from envcat.bff.errors import page_error
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views.forms import describe, page, phrase_field, submit
from envcat.core.schemas.accounts import AccountOut
from envcat.core.schemas.groups import GroupList
from envcat.core.schemas.team import MemberList

bp = Blueprint("groups", __name__)


def _ids(field: str = "user_ids") -> list[str]:
    return list(dict.fromkeys(request.form.getlist(field)))


@bp.get("/groups")
@login_required
def groups() -> Response:
    """The workspace's groups and their members; admins create, change and delete them."""
    role = backend.fetch(AccountOut, "/api/v1/me").role
    return page(
        "groups.html",
        identity=current_identity(),
        groups=backend.fetch(GroupList, "/api/v1/groups").groups,
        members=backend.fetch(MemberList, "/api/v1/members").members,
        is_admin=role in ("admin", "owner"),
    )


@bp.post("/groups/new")
@login_required
def create() -> Response:
    """Create a group with the ticked members."""
    body = {
        "name": request.form.get("name", ""),
        "description": request.form.get("description", ""),
        "user_ids": _ids(),
    }
    return submit("POST", "/api/v1/groups", json=body, back="/groups", done="Group created.")


@bp.post("/groups/<group_id>/members")
@login_required
def set_members(group_id: str) -> Response:
    """Replace a group's members with the ticked ones."""
    path = api_path("/api/v1/groups/{group_id}", group_id=group_id)
    return submit("PATCH", path, json={"user_ids": _ids()}, back="/groups", done="Group saved.")


@bp.post("/groups/<group_id>/delete")
@login_required
def delete(group_id: str) -> Response:
    """Delete a group no bundle rule names."""
    path = api_path("/api/v1/groups/{group_id}", group_id=group_id)
    return submit("DELETE", path, back="/groups", done="Group deleted.")


@bp.post("/bundles/<bundle_id>/editors")
@login_required
def set_editors(bundle_id: str) -> Response:
    """Who may edit this bundle: a minimum role (or named only), members and groups."""
    role = request.form.get("min_role", "admin")
    body = {
        "min_role": role if role in ("member", "admin", "owner") else None,
        "user_ids": _ids(),
        "group_ids": _ids("group_ids"),
    }
    path = api_path("/api/v1/bundles/{bundle_id}/editors", bundle_id=bundle_id)
    back = api_path("/bundles/{bundle_id}", bundle_id=bundle_id) + "#editors"
    return submit("PUT", path, json=body, back=back, done="Editors saved.")


@bp.post("/approve/<request_id>/break-glass")
@login_required
def break_glass(request_id: str) -> Response:
    """An owner releases alone past the bundle's policy, with a reason (loudly audited)."""
    include = _ids("include_keys")
    body: dict[str, object] = {
        "bundle_id": request.form.get("bundle_id", ""),
        "include_keys": include,
        "reason": request.form.get("reason", ""),
        **phrase_field(),  # where the workspace requires approvers to type it
    }
    statement, credential = (
        request.form.get("passkey_statement"),
        request.form.get("passkey_credential"),
    )
    if statement and credential:  # the page's passkey script signed the release (issue #20)
        body["passkey"] = {"statement": _json(statement), "credential": _json(credential)}
    path = api_path("/api/v1/requests/{id}/break-glass", id=request_id)
    try:
        backend.call("POST", path, json=body, ok=(202,))
    except UpstreamError as exc:
        if exc.status == 401:
            raise
        if exc.status == 409:
            return page("approve_done.html", 409, outcome="decided")
        back = api_path("/approve/{id}", id=request_id)
        return page_error(
            exc.status, describe(exc), "Break-glass refused", (back, "Back to the request")
        )
    return page("approve_done.html", outcome="approved", count=len(include))


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return {}  # the api answers 400
