"""`envcat login`, whoami, logout, and signed-in terminals on the account page (issue #16).

Public: create a login request (then wait and cancel as any request), and whoami
and logout, which take the user token itself as `Authorization: Bearer ecu_…`.
Signed: approve a login ("sign in this terminal"), list and revoke one's terminals.
"""

from __future__ import annotations

from flask import Blueprint

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import bearer_token, client_origin, current_actor
from envcat.api.extensions import limiter
from envcat.api.openapi import endpoint
from envcat.core.schemas.logins import LoginCreate, SignInApproval, UserTokenList, WhoAmI
from envcat.core.schemas.requests import AccessRequestCreated, DecisionAccepted
from envcat.services import admin_tokens, user_tokens
from envcat.services.access_requests import login
from envcat.services.runtime import current

SERVICE_TOKEN_PREFIX = "ect_"  # noqa: S105  # a prefix to match, not a secret
bp = Blueprint("logins", __name__, url_prefix="/api/v1")
signed_bp = signed_blueprint("login_approvals")


def _creation_limit() -> str:
    return current().settings.request_rate_limit


limiter.limit(_creation_limit, methods=["POST"])(bp)


def _token() -> str:
    token = bearer_token()
    if token is None:
        raise user_tokens.InvalidUserToken("Send the terminal's token: Authorization: Bearer ecu_…")
    return token


@endpoint(
    bp,
    "/logins",
    "POST",
    summary="Ask to sign a terminal in (envcat login); wait and cancel as any request",
    auth="public",
    body=LoginCreate,
    responses={201: AccessRequestCreated},
    errors=(400, 404, 429),
)
def create_login(body: LoginCreate) -> tuple[AccessRequestCreated, int]:
    """Anyone may ask; only a member's approval mints a token, sealed to `client_pubkey`."""
    return login.create(body, client_origin().ip or "unknown"), 201


@endpoint(
    bp,
    "/logins/whoami",
    "GET",
    summary="Whose terminal token this is (Bearer ecu_…, or an admin service token ect_…)",
    auth="public",
    responses={200: WhoAmI},
    errors=(401, 403),
)
def whoami() -> WhoAmI:
    """The token's person, workspace, role and expiry; 401 once revoked or expired.

    An admin service token answers its synthetic caller (`token:<id>`, role admin); a
    service token without the admin scope is 403 (issue #16, bundles as code).
    """
    token = _token()
    if token.startswith(SERVICE_TOKEN_PREFIX):
        return admin_tokens.whoami(token)
    return user_tokens.whoami(token)


@endpoint(
    bp,
    "/logins/logout",
    "POST",
    summary="Revoke the terminal token presented (envcat logout)",
    auth="public",
    responses={204: None},
    errors=(401,),
)
def logout() -> tuple[str, int]:
    """Revoke at once (audited); a revoked or unknown token gets 401."""
    user_tokens.log_out(_token(), client_origin())
    return "", 204


@endpoint(
    signed_bp,
    "/requests/<request_id>/sign-in",
    "POST",
    summary="Approve a login: sign the asking terminal in as the caller",
    auth="signed",
    body=SignInApproval,
    body_optional=True,  # only where the workspace requires the typed phrase
    responses={200: DecisionAccepted},
    errors=(400, 401, 403, 404, 409),
)
def sign_in(request_id: str, body: SignInApproval) -> DecisionAccepted:
    """Viewer or above: the token acts as the caller, with the caller's role."""
    who = caller()
    login.sign_in(
        request_id,
        tenant_id=who.tenant_id,
        user_id=who.user_id,
        origin=client_origin(),
        phrase=body.phrase,
    )
    return DecisionAccepted()


@endpoint(
    signed_bp,
    "/me/user-tokens",
    "GET",
    summary="The caller's signed-in terminals in this workspace",
    auth="signed",
    responses={200: UserTokenList},
)
def list_user_tokens() -> UserTokenList:
    """Newest first, with last use; never the tokens."""
    return user_tokens.list_tokens(caller().tenant_id, caller().user_id)


@endpoint(
    signed_bp,
    "/me/user-tokens/<token_id>",
    "DELETE",
    summary="Sign one of the caller's terminals out at once",
    auth="signed",
    responses={204: None},
    errors=(404,),
)
def revoke_user_token(token_id: str) -> tuple[str, int]:
    """Revoke (audited); another person's terminal is 404."""
    user_tokens.revoke(current_actor(), token_id)
    return "", 204
