"""Signed endpoints of issue #17's "who may request" rule of a bundle. Thin."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.requesters import RequestersRule
from envcat.services import editors, requesters

bp = signed_blueprint("requesters")


@endpoint(
    bp,
    "/bundles/<bundle_id>/requesters",
    "GET",
    summary='Who may request this bundle: "anyone" with the link or signed-in "members"',
    auth="signed",
    responses={200: RequestersRule},
    errors=(404,),
)
def get_requesters(bundle_id: str) -> RequestersRule:
    """Any member."""
    return requesters.describe(caller().tenant_id, bundle_id)


@endpoint(
    bp,
    "/bundles/<bundle_id>/requesters",
    "PUT",
    summary='Set who may request this bundle ("members": signed-in members only)',
    auth="signed",
    body=RequestersRule,
    responses={200: RequestersRule},
    errors=(400, 403, 404),
)
def set_requesters(bundle_id: str, body: RequestersRule) -> RequestersRule:
    """Admin+ who may edit the bundle, like its other rules."""
    who = caller()
    who.require("admin")
    editors.require_editor(who.tenant_id, who.user_id, who.role, bundle_id)
    return requesters.set_rule(current_actor(), bundle_id, body)
