"""Who is signed in: a local server-side session or a verified Clerk token; CSRF tokens.

Flask's signed cookie (HttpOnly, SameSite=Lax) holds the CSRF token and, once a
local account signs in, a random session id; the record it names lives in Redis
(`envcat.bff.sessions`), so sign-out and revocation take effect at once. Never a
password or a value.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import current_app, g, redirect, request, session, url_for
from werkzeug.exceptions import Forbidden, HTTPException

from envcat.bff.apiclient import BFF_SIGNER, CallerInfo, Signer, reply_as
from envcat.bff.clerk import ClerkClaims, InvalidToken
from envcat.bff.runtime import runtime
from envcat.bff.security import session_secret
from envcat.bff.sessions import SessionStore, record_mac_key
from envcat.core import signing
from envcat.core.schemas.accounts import AccountOut
from envcat.core.schemas.logins import USER_TOKEN_BEARER, WhoAmI

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("envcat.bff")

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CLERK_COOKIE = "__session"
_SID = "sid"
_CSRF = "csrf"
_CLERK = "clerk"
SERVICE_TOKEN_BEARER = "Bearer ect_"  # noqa: S105  # a prefix to match, not a secret
TERMINAL_BEARERS = (USER_TOKEN_BEARER, SERVICE_TOKEN_BEARER)
F = TypeVar("F", bound=Callable[..., Any])


class CsrfFailed(Forbidden):
    """A state-changing request without the session's CSRF token."""

    description = "This form has expired or did not come from EnvCat. Reload the page and retry."


@dataclass(frozen=True)
class Identity:
    """The signed-in person and the tenant they act in."""

    user_id: str
    tenant_id: str
    email: str
    role: str
    via_bearer: bool = False
    session_id: str | None = None
    via_user_token: bool = False  # a terminal signed in with `envcat login` (issue #16)
    via_service_token: bool = False  # an admin service token: bundles as code (issue #16)

    @property
    def signer(self) -> Signer:
        """Sign api calls for this user in this tenant."""
        return Signer(self.user_id, self.tenant_id)


def caller_info() -> CallerInfo:
    """Client IP (after ProxyFix), user agent and request id, passed on to the api."""
    return CallerInfo(
        client_ip=request.remote_addr,
        user_agent=request.user_agent.string or None,
        request_id=g.get("request_id"),
    )


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    token = session.get(_CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_CSRF] = token
    return token


def check_csrf(supplied: str | None) -> None:
    """Raise CsrfFailed unless `supplied` equals the session's token (constant time)."""
    expected = session.get(_CSRF)
    if not isinstance(expected, str) or not expected or not supplied:
        raise CsrfFailed()
    if not hmac.compare_digest(expected.encode("utf-8"), supplied.encode("utf-8", "replace")):
        raise CsrfFailed()


def sessions() -> SessionStore:
    """The session records of this process's Redis."""
    bff = runtime()
    return SessionStore(bff.redis, record_mac_key(session_secret(bff.settings)))


def start_session(account: AccountOut) -> None:
    """Replace the session (no fixation) with a new server-side one for the api's account reply."""
    _start(account.user.id, account.tenant.id, account.user.email, account.role)


def _start(user_id: str, tenant_id: str, email: str, role: str) -> None:
    end_session()
    session_id = sessions().create(user_id, tenant_id, email, role)
    session.permanent = True
    session[_SID] = session_id
    session[_CSRF] = secrets.token_urlsafe(32)
    g.pop("identity", None)


def renew_session(identity: Identity) -> int:
    """End every session of the user, start a fresh one for this browser; return how many others.

    A new id here too: a thief holding a copy of this very cookie is signed out as well.
    """
    ended = sessions().revoke_user(identity.user_id)
    _start(identity.user_id, identity.tenant_id, identity.email, identity.role)
    return max(0, ended - 1)


def end_session() -> None:
    """Revoke this browser's server-side session, if any, and forget everything in the cookie."""
    session_id = session.get(_SID)
    if isinstance(session_id, str) and session_id:
        sessions().revoke(session_id)
    session.clear()
    g.pop("identity", None)


def current_identity() -> Identity | None:
    """The caller of this request, or None when nobody valid is signed in."""
    if "identity" not in g and _user_token_header() is not None:
        g.identity = _user_token_identity()
    if "identity" not in g:
        g.identity = _clerk_identity() if runtime().clerk is not None else _local_identity()
    return cast(Identity | None, g.identity)


def _user_token_header() -> str | None:
    """`Bearer ecu_…` or `Bearer ect_…` on an `/api/v1/` call (the proxy only: never the
    UI's pages)."""
    header = request.headers.get("Authorization", "")
    if request.path.startswith("/api/v1/") and header.startswith(TERMINAL_BEARERS):
        return header
    return None


def bearer_refusal() -> httpx.Response | None:
    """The api's refusal of this call's terminal bearer (401, 403, 429), to relay as is."""
    refused: httpx.Response | None = g.get("bearer_refusal")
    return refused


def _user_token_identity() -> Identity | None:
    """Who a terminal's user token (or an admin service token) speaks for, as the api's
    whoami says (issue #16); an admin token acts as `token:<id>` with the admin role."""
    header = _user_token_header() or ""
    response = runtime().api.send(
        "GET",
        "/api/v1/logins/whoami",
        signer=None,
        caller=caller_info(),
        headers={"Authorization": header},
    )
    if response.status_code != 200:
        if response.status_code in (401, 403, 429):
            g.bearer_refusal = response
        return None
    me = reply_as(WhoAmI, response)
    return Identity(
        me.user_id,
        me.tenant_id,
        me.email,
        me.role,
        via_bearer=True,
        via_user_token=True,
        via_service_token=header.startswith(SERVICE_TOKEN_BEARER),
    )


def _local_identity() -> Identity | None:
    session_id = session.get(_SID)
    if not isinstance(session_id, str) or not session_id:
        return None
    record = sessions().load(session_id)
    if record is None:  # signed out, revoked or expired: the cookie alone is worth nothing
        return None
    user_id, tenant_id = record.user_id, record.tenant_id
    if not (signing.ID_PATTERN.fullmatch(user_id) and signing.ID_PATTERN.fullmatch(tenant_id)):
        return None
    return Identity(user_id, tenant_id, record.email, record.role, session_id=session_id)


def _clerk_token() -> tuple[str | None, bool]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), True
    return request.cookies.get(CLERK_COOKIE), False


def _clerk_identity() -> Identity | None:
    token, via_bearer = _clerk_token()
    verifier = runtime().clerk
    if not token or verifier is None:
        return None
    try:
        claims = verifier.verify(token)
    except InvalidToken as exc:
        log.info("clerk token rejected", extra={"reason": str(exc)})
        return None
    cache_key = f"{claims.user_id}|{claims.tenant_id}"
    cached = session.get(_CLERK)
    if not (isinstance(cached, dict) and cached.get("key") == cache_key):
        cached = _clerk_account(claims)
        if cached is None:
            # A valid Clerk user the api refuses: the sign-in page must say so rather
            # than let Clerk's script bounce them straight back here.
            g.clerk_refused = True
            return None
        cached["key"] = cache_key
        session[_CLERK] = cached
    return Identity(
        claims.user_id, claims.tenant_id, cached["email"], cached["role"], via_bearer=via_bearer
    )


def _clerk_account(claims: ClerkClaims) -> dict[str, str] | None:
    """GET /me for the token's user; on 404 provision just in time, then retry once."""
    api, signer = runtime().api, Signer(claims.user_id, claims.tenant_id)
    response = api.send("GET", "/api/v1/me", signer=signer, caller=caller_info())
    if response.status_code == 404:
        jit = api.send(
            "POST",
            "/api/v1/internal/clerk/jit",
            signer=BFF_SIGNER,
            caller=caller_info(),
            json=_jit_body(claims),
        )
        if jit.status_code != 200:
            log.warning("clerk jit refused", extra={"status": jit.status_code})
            return None
        response = api.send("GET", "/api/v1/me", signer=signer, caller=caller_info())
    if response.status_code != 200:
        log.info("clerk user has no account here", extra={"status": response.status_code})
        return None
    me = reply_as(AccountOut, response)
    return {"email": me.user.email, "role": me.role}


def _jit_body(claims: ClerkClaims) -> dict[str, str]:
    body = {
        "user_id": claims.user_id,
        "email": claims.email,
        "name": claims.name,
        "org_id": claims.org_id,
        "org_name": claims.org_slug,
        "org_role": claims.org_role,
    }
    return {name: value for name, value in body.items() if value is not None}


def back_path() -> str:
    """Where to come back to after signing in: this page, or its GET form for a POST."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    try:
        current_app.url_map.bind("localhost").match(request.path, method="GET")
    except HTTPException:  # a POST-only action has no page to come back to
        return "/"
    return request.path


def login_required(view: F) -> F:
    """Send anonymous visitors to the sign-in page, and back here afterwards."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_identity() is None:
            return redirect(url_for("auth.sign_in", redirect_url=back_path()))
        return view(*args, **kwargs)

    return cast(F, wrapper)
