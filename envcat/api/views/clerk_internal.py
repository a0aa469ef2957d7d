"""Internal endpoint the bff calls on a Clerk user's first sign-in (bff identity only)."""

from __future__ import annotations

from flask import Blueprint

from envcat.api.auth import authenticate_bff
from envcat.api.openapi import endpoint
from envcat.core.schemas.accounts import AccountOut
from envcat.core.schemas.clerk import ClerkJitRequest
from envcat.services import provisioning

bp = Blueprint("clerk_internal", __name__, url_prefix="/api/v1/internal")
bp.before_request(authenticate_bff)


@endpoint(
    bp,
    "/clerk/jit",
    "POST",
    summary="Provision a Clerk user (and organisation membership) on first sign-in",
    auth="internal",
    body=ClerkJitRequest,
    responses={200: AccountOut},
    errors=(401, 404),
)
def clerk_jit(body: ClerkJitRequest) -> AccountOut:
    """The account the session acts as: the org when given, else the personal tenant."""
    return provisioning.provision_session(body)
