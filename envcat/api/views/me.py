"""Signed endpoints: who the caller is (DESIGN §5)."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.accounts import AccountOut, TenantOut
from envcat.core.schemas.workspaces import WorkspaceList, WorkspaceRename
from envcat.services import tenancy, workspaces

bp = signed_blueprint("me")


@endpoint(
    bp,
    "/me",
    "GET",
    summary="The signed-in user, the tenant of the signature and the role there",
    auth="signed",
    responses={200: AccountOut},
)
def me() -> AccountOut:
    """Any member of the tenant."""
    who = caller()
    return tenancy.account(who.user_id, who.tenant_id)


@endpoint(
    bp,
    "/workspaces",
    "GET",
    summary="The workspaces the caller belongs to (the switcher)",
    auth="signed",
    responses={200: WorkspaceList},
)
def list_workspaces() -> WorkspaceList:
    """Any member; `current` is the slug of the tenant the signature names."""
    who = caller()
    return WorkspaceList(
        workspaces=workspaces.memberships(who.user_id), current=workspaces.slug_of(who.tenant_id)
    )


@endpoint(
    bp,
    "/workspace",
    "PATCH",
    summary="Change the workspace's slug (what CLIs name with -w)",
    auth="signed",
    body=WorkspaceRename,
    responses={200: TenantOut},
    errors=(400, 403, 409),
)
def rename_workspace(body: WorkspaceRename) -> TenantOut:
    """Owner only. CLIs and .envcat.toml files naming the old slug stop working."""
    caller().require("owner")
    return workspaces.rename(current_actor(), body.slug)
