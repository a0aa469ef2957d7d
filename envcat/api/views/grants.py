"""Signed endpoints of issue #17's device grants: a bundle's grant policy, list, revoke. Thin."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.grants import GrantList, GrantPolicy, GrantQuery
from envcat.services import grants

bp = signed_blueprint("grants")


@endpoint(
    bp,
    "/bundles/<bundle_id>/grant-policy",
    "GET",
    summary="How many hours an approver may trust a device for this bundle (0 = no grants)",
    auth="signed",
    responses={200: GrantPolicy},
    errors=(404,),
)
def get_grant_policy(bundle_id: str) -> GrantPolicy:
    """Any member."""
    return grants.get_policy(caller().tenant_id, bundle_id)


@endpoint(
    bp,
    "/bundles/<bundle_id>/grant-policy",
    "PUT",
    summary="Allow device grants for this bundle for at most max_hours (0 turns them off)",
    auth="signed",
    body=GrantPolicy,
    responses={200: GrantPolicy},
    errors=(400, 403, 404),
)
def set_grant_policy(bundle_id: str, body: GrantPolicy) -> GrantPolicy:
    """Admin+."""
    caller().require("admin")
    return grants.set_policy(current_actor(), bundle_id, body)


@endpoint(
    bp,
    "/grants",
    "GET",
    summary="The workspace's device grants (of one bundle), newest first",
    auth="signed",
    query=GrantQuery,
    responses={200: GrantList},
)
def list_grants(query: GrantQuery) -> GrantList:
    """Any member: who trusted which device for what, until when."""
    return grants.list_grants(caller().tenant_id, query.bundle_id)


@endpoint(
    bp,
    "/grants/<grant_id>",
    "DELETE",
    summary="Revoke a device grant: the device's next request waits for a person",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def revoke_grant(grant_id: str) -> tuple[str, int]:
    """Member+ (any approver may withdraw standing trust; revoking only takes access away)."""
    caller().require("member")
    grants.revoke(current_actor(), grant_id)
    return "", 204
