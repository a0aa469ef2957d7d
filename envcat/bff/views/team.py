"""Members, invitations, team workspaces, notifications and bundle approvers (issue #17).

An invitation's link and a webhook's signing secret are shown once, in the page
that answers the form (never flashed: flash messages live in the session record).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, request

from envcat.bff import backend
from envcat.bff.apiclient import Signer, reply_as
from envcat.bff.backend import UpstreamError, api_path
from envcat.bff.identity import current_identity, login_required, start_session
from envcat.bff.views.forms import checkbox, describe, page, submit
from envcat.core.schemas.accounts import AccountOut, TenantOut
from envcat.core.schemas.team import (
    InviteAccepted,
    InviteCreated,
    InviteList,
    MemberList,
    NotificationSettingsOut,
)

bp = Blueprint("team", __name__)
MAX_TOKEN = 128


def _members_page(status: int = 200, **shown: Any) -> Response:
    identity = current_identity()
    listed = backend.fetch(MemberList, "/api/v1/members")
    # the role now, not the one the session saw at sign-in (it may have changed since)
    role = backend.fetch(AccountOut, "/api/v1/me").role
    is_admin = role in ("admin", "owner")
    invites = backend.fetch(InviteList, "/api/v1/invites").invites if is_admin else []
    notifications = (
        backend.fetch(NotificationSettingsOut, "/api/v1/notifications") if is_admin else None
    )
    return page(
        "members.html",
        status,
        identity=identity,
        members=listed.members,
        managed_by=listed.managed_by,
        invites=invites,
        notifications=notifications,
        is_admin=is_admin,
        **shown,
    )


@bp.get("/members")
@login_required
def members() -> Response:
    """The workspace's members; admins also see invitations and notification settings."""
    return _members_page()


@bp.post("/members/invite")
@login_required
def invite() -> Response:
    """Invite an email with a role; the link is shown once in this answer."""
    body = {"email": request.form.get("email", ""), "role": request.form.get("role", "member")}
    try:
        made = backend.send_as(InviteCreated, "POST", "/api/v1/invites", json=body, ok=(201,))
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        return _members_page(exc.status, error=describe(exc))
    return _members_page(201, invite_link=made.link, invited=made)


@bp.post("/members/<user_id>/role")
@login_required
def change_role(user_id: str) -> Response:
    """Give a member another role."""
    path = api_path("/api/v1/members/{user_id}", user_id=user_id)
    role = request.form.get("role", "")
    return submit("PATCH", path, json={"role": role}, back="/members", done="Role changed.")


@bp.post("/members/<user_id>/remove")
@login_required
def remove(user_id: str) -> Response:
    """Remove a member (or leave)."""
    path = api_path("/api/v1/members/{user_id}", user_id=user_id)
    return submit("DELETE", path, back="/members", done="Member removed.")


@bp.post("/invites/<invite_id>/revoke")
@login_required
def revoke(invite_id: str) -> Response:
    """Revoke a pending invitation."""
    path = api_path("/api/v1/invites/{invite_id}", invite_id=invite_id)
    return submit("DELETE", path, back="/members", done="Invitation revoked.")


@bp.post("/members/notifications")
@login_required
def notifications() -> Response:
    """Save the webhook URL and email switch; a new signing secret is shown once."""
    url = request.form.get("webhook_url", "").strip()
    body = {
        "webhook_url": url or None,
        "email_enabled": checkbox("email_enabled"),
        "rotate_secret": checkbox("rotate_secret"),
    }
    try:
        saved = backend.send_as(NotificationSettingsOut, "PUT", "/api/v1/notifications", json=body)
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        return _members_page(exc.status, error=describe(exc))
    return _members_page(webhook_secret=saved.webhook_secret, saved=True)


def _switch_to(tenant_id: str) -> None:
    identity = current_identity()
    if identity is None:
        return
    reply = backend.timed_send(
        "GET", "/api/v1/me", signer=Signer(identity.user_id, tenant_id), kind="page"
    )
    if reply.status_code == 200:
        start_session(reply_as(AccountOut, reply))


@bp.post("/workspaces/new")
@login_required
def create_workspace() -> Response:
    """Make a team workspace, own it and act in it."""
    body: dict[str, Any] = {"name": request.form.get("name", "").strip()}
    if slug := request.form.get("slug", "").strip():
        body["slug"] = slug
    try:
        made = backend.send_as(TenantOut, "POST", "/api/v1/workspaces", json=body, ok=(201,))
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect("/members")  # type: ignore[return-value]
    _switch_to(made.id)
    flash(f"Created the workspace {made.name} ({made.slug}); you are its owner.", "success")
    return redirect("/members")  # type: ignore[return-value]


@bp.get("/invites/accept")
@login_required
def accept_page() -> Response:
    """Confirm joining: the token stays in the form, the api checks it on POST."""
    token = request.args.get("token", "")[:MAX_TOKEN]
    return page("invite_accept.html", identity=current_identity(), token=token)


@bp.post("/invites/accept")
@login_required
def accept() -> Response:
    """Join the invitation's workspace and act in it."""
    token = request.form.get("token", "")[:MAX_TOKEN]
    try:
        joined = backend.send_as(InviteAccepted, "POST", "/api/v1/join", json={"token": token})
    except UpstreamError as exc:
        if exc.status == 401:
            raise
        error = describe(exc) if exc.status != 404 else "This invitation link is not valid."
        return page(
            "invite_accept.html", exc.status, identity=current_identity(), token="", error=error
        )
    _switch_to(joined.tenant.id)
    flash(f"You joined {joined.tenant.name} as {joined.role}.", "success")
    return redirect("/bundles")  # type: ignore[return-value]


@bp.post("/bundles/<bundle_id>/approvers")
@login_required
def set_approvers(bundle_id: str) -> Response:
    """Who may approve this bundle: a minimum role (or named only) and named members."""
    role = request.form.get("min_role", "member")
    required = request.form.get("approvals_required", "1").strip()
    body = {
        "min_role": role if role in ("member", "admin", "owner") else None,
        "user_ids": list(dict.fromkeys(request.form.getlist("user_ids"))),
        "group_ids": list(dict.fromkeys(request.form.getlist("group_ids"))),
        "approvals_required": int(required) if required.isdigit() and len(required) < 3 else 0,
        "no_self_approval": request.form.get("no_self_approval") == "on",  # issue #17
    }
    path = api_path("/api/v1/bundles/{bundle_id}/approvers", bundle_id=bundle_id)
    back = api_path("/bundles/{bundle_id}", bundle_id=bundle_id) + "#approvers"
    return submit("PUT", path, json=body, back=back, done="Approvers saved.")
