"""Signed endpoints of issue #17's groups, per-bundle editors and break-glass. Thin."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.backpressure import refuse_when_behind
from envcat.api.context import client_origin, current_actor
from envcat.api.openapi import endpoint
from envcat.api.views import team
from envcat.core.schemas.groups import (
    BreakGlass,
    EditorsOut,
    EditorsUpdate,
    GroupCreate,
    GroupList,
    GroupOut,
    GroupUpdate,
)
from envcat.core.schemas.requests import DecisionAccepted
from envcat.services import break_glass, editors, groups
from envcat.services.access_requests import lifecycle
from envcat.workers import tasks
from envcat.workers.enqueue import enqueue

bp = signed_blueprint("groups")


@endpoint(
    bp,
    "/groups",
    "GET",
    summary="The workspace's groups (teams) and their members",
    auth="signed",
    responses={200: GroupList},
)
def list_groups() -> GroupList:
    """Any member."""
    return groups.list_groups(caller().tenant_id)


@endpoint(
    bp,
    "/groups",
    "POST",
    summary="Create a group of members (admin+)",
    auth="signed",
    body=GroupCreate,
    responses={201: GroupOut},
    errors=(400, 403, 409),
)
def create_group(body: GroupCreate) -> tuple[GroupOut, int]:
    """Admin+."""
    caller().require("admin")
    return groups.create(current_actor(), body), 201


@endpoint(
    bp,
    "/groups/<group_id>",
    "GET",
    summary="One group with its members",
    auth="signed",
    responses={200: GroupOut},
    errors=(404,),
)
def get_group(group_id: str) -> GroupOut:
    """Any member."""
    return groups.show(caller().tenant_id, group_id)


@endpoint(
    bp,
    "/groups/<group_id>",
    "PATCH",
    summary="Rename a group or replace its members (admin+)",
    auth="signed",
    body=GroupUpdate,
    responses={200: GroupOut},
    errors=(400, 403, 404, 409),
)
def update_group(group_id: str, body: GroupUpdate) -> GroupOut:
    """Admin+."""
    caller().require("admin")
    return groups.update(current_actor(), group_id, body)


@endpoint(
    bp,
    "/groups/<group_id>",
    "DELETE",
    summary="Delete a group no bundle rule names (admin+)",
    auth="signed",
    responses={204: None},
    errors=(403, 404, 409),
)
def delete_group(group_id: str) -> tuple[str, int]:
    """Admin+; 409 group_in_use while a bundle's rule names it."""
    caller().require("admin")
    groups.remove(current_actor(), group_id)
    return "", 204


@endpoint(
    bp,
    "/bundles/<bundle_id>/editors",
    "GET",
    auth="signed",
    responses={200: EditorsOut},
    summary="Who may edit this bundle (and whether the caller may)",
    errors=(404,),
)
def get_editors(bundle_id: str) -> EditorsOut:
    """Any member."""
    who = caller()
    return editors.describe(who.tenant_id, bundle_id, who.user_id, who.role)


@endpoint(
    bp,
    "/bundles/<bundle_id>/editors",
    "PUT",
    auth="signed",
    body=EditorsUpdate,
    summary="Set who may edit this bundle: a minimum role, named members and groups",
    responses={200: EditorsOut},
    errors=(400, 403, 404),
)
def set_editors(bundle_id: str, body: EditorsUpdate) -> EditorsOut:
    """Admin+ who may edit the bundle."""
    who = caller()
    who.require("admin")
    return editors.set_rule(current_actor(), who.role, bundle_id, body)


@endpoint(
    bp,
    "/requests/<request_id>/break-glass",
    "POST",
    auth="signed",
    body=BreakGlass,
    summary="An owner releases alone past the bundle's approval policy, with a reason",
    responses={202: DecisionAccepted},
    errors=(400, 401, 403, 404, 409, 503),
)
def break_glass_release(request_id: str, body: BreakGlass) -> tuple[DecisionAccepted, int]:
    """Owner only; audited `request.break_glass`, notified to approvers, owners and admins."""
    who = caller()
    refuse_when_behind("approve")
    accepted = break_glass.release(
        request_id,
        tenant_id=who.tenant_id,
        user_id=who.user_id,
        role=who.role,
        body=body,
        origin=client_origin(),
    )
    enqueue(
        tasks.encrypt_from_bundle,
        (accepted.request_id, accepted.mac),
        on_failure=lambda: lifecycle.abandon(accepted),
        message="The task queue is unavailable; ask the developer to retry.",
    )
    team.notify_decision(who.tenant_id, request_id, break_glass.ACTION, accepted.notice)
    return DecisionAccepted(), 202
