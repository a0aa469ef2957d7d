"""Signed endpoints: create a workspace, its members and invitations (issue #17). Thin."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import client_origin, current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.accounts import TenantOut
from envcat.core.schemas.team import (
    InviteAccept,
    InviteAccepted,
    InviteCreate,
    InviteCreated,
    InviteList,
    MemberList,
    MemberOut,
    RoleChange,
    WorkspaceCreate,
)
from envcat.services import members
from envcat.workers import notification_tasks
from envcat.workers.enqueue import BROKER_ERRORS

bp = signed_blueprint("members")


@endpoint(
    bp,
    "/workspaces",
    "POST",
    summary="Create a team workspace; the caller becomes its owner (local accounts)",
    auth="signed",
    body=WorkspaceCreate,
    responses={201: TenantOut},
    errors=(400, 409),
)
def create_workspace(body: WorkspaceCreate) -> tuple[TenantOut, int]:
    """Any signed-in local user; 409 managed_by_clerk under Clerk, or when the slug is taken."""
    return members.create_workspace(current_actor(), body), 201


@endpoint(
    bp,
    "/members",
    "GET",
    summary="The workspace's members and their roles",
    auth="signed",
    responses={200: MemberList},
)
def list_members() -> MemberList:
    """Any member."""
    return members.list_members(caller().tenant_id)


@endpoint(
    bp,
    "/members/<user_id>",
    "PATCH",
    summary="Change a member's role (admin+; owners alone touch owners)",
    auth="signed",
    body=RoleChange,
    responses={200: MemberOut},
    errors=(400, 403, 409),
)
def change_role(user_id: str, body: RoleChange) -> MemberOut:
    """409 last_owner when the last owner would be demoted; 409 managed_by_clerk under Clerk."""
    who = caller()
    who.require("admin")
    return members.change_role(current_actor(), who.role, user_id, body.role)


@endpoint(
    bp,
    "/members/<user_id>",
    "DELETE",
    summary="Remove a member (admin+), or leave (one's own id)",
    auth="signed",
    responses={204: None},
    errors=(403, 409),
)
def remove_member(user_id: str) -> tuple[str, int]:
    """409 last_owner when the last owner would go."""
    members.remove_member(current_actor(), caller().role, user_id)
    return "", 204


@endpoint(
    bp,
    "/invites",
    "GET",
    summary="The workspace's invitations (never their tokens)",
    auth="signed",
    responses={200: InviteList},
    errors=(403,),
)
def list_invites() -> InviteList:
    """Admin+."""
    caller().require("admin")
    return members.list_invites(caller().tenant_id)


@endpoint(
    bp,
    "/invites",
    "POST",
    summary="Invite an email with a role; the link is shown once (and emailed with SMTP)",
    auth="signed",
    body=InviteCreate,
    responses={201: InviteCreated},
    errors=(400, 403, 409),
)
def create_invite(body: InviteCreate) -> tuple[InviteCreated, int]:
    """Admin+; only owners invite owners."""
    who = caller()
    who.require("admin")
    made = members.invite(current_actor(), who.role, body)
    if made.mail_queued:
        try:
            notification_tasks.send_invite.apply_async((made.created.id,))
        except BROKER_ERRORS:
            # The link is in this reply anyway: the inviter can pass it on.
            members.forget_invite_mail(made.created.id)
            made.created.emailed = False
    return made.created, 201


@endpoint(
    bp,
    "/invites/<invite_id>",
    "DELETE",
    summary="Revoke a pending invitation",
    auth="signed",
    responses={204: None},
    errors=(403, 409),
)
def revoke_invite(invite_id: str) -> tuple[str, int]:
    """Admin+."""
    caller().require("admin")
    members.revoke_invite(current_actor(), invite_id)
    return "", 204


@endpoint(
    bp,
    "/join",
    "POST",
    summary="Accept an invitation as the signed-in account (its email must be the invited one)",
    auth="signed",
    body=InviteAccept,
    responses={200: InviteAccepted},
    errors=(400, 403, 409, 410),
)
def accept_invite(body: InviteAccept) -> InviteAccepted:
    """Signed in any workspace of one's own; joins the invitation's workspace."""
    return members.accept(caller().user_id, body.token, client_origin())
