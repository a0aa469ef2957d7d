"""Signed endpoints: who the caller is (DESIGN §5)."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.openapi import endpoint
from envcat.core.schemas.accounts import AccountOut
from envcat.services import tenancy

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
