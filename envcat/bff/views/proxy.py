"""The public `/api/v1/*` surface: public routes pass through, the rest is signed per session.

Public routes (the CLI's request endpoints, Clerk webhooks, the OpenAPI
document) are forwarded unsigned with only the headers they need. Every other
route needs a valid session (or Clerk bearer token) and is HMAC-signed for that
user and tenant; identity and signature headers sent by the browser are never
forwarded, and the internal endpoints are not reachable from outside at all.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from flask import Blueprint, Response, request
from werkzeug.wrappers import Request

from envcat.bff import metrics
from envcat.bff.apiclient import Relayed
from envcat.bff.backend import timed_relay
from envcat.bff.errors import json_error
from envcat.bff.identity import (
    CSRF_HEADER,
    SERVICE_TOKEN_BEARER,
    Identity,
    bearer_refusal,
    check_csrf,
    current_identity,
)
from envcat.core.bearer_routes import is_admin_token_route, is_user_token_route
from envcat.core.schemas.logins import USER_TOKEN_BEARER
from envcat.core.wire import PATH_ID_RE, POLL_TOKEN_HEADER

bp = Blueprint("proxy", __name__)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PREFIX = "/api/v1/"
_ID = PATH_ID_RE.pattern  # any URL-safe id: the api answers an unknown one with its 404
PUBLIC_ROUTES = (
    ("POST", re.compile(r"requests")),
    ("GET", re.compile(rf"requests/{_ID}/context")),
    ("GET", re.compile(rf"requests/{_ID}/wait")),
    ("DELETE", re.compile(rf"requests/{_ID}")),
    ("POST", re.compile(r"webhooks/clerk")),
    ("GET", re.compile(r"openapi\.json")),
    ("GET", re.compile(rf"workspaces/{_ID}/approvers")),  # issue #20: `envcat approvers`
    ("POST", re.compile(r"scan/(?:matches|leaks)")),  # issue #19: `envcat scan`
    ("POST", re.compile(r"logins")),  # issue #16: `envcat login`, `whoami`, `logout`
    ("GET", re.compile(r"logins/whoami")),
    ("POST", re.compile(r"logins/logout")),
)
BEARER_ROUTES = {("POST", "requests"), ("GET", "logins/whoami"), ("POST", "logins/logout")}
SERVICE_TOKEN_ROUTES = {("POST", "requests"), ("GET", "logins/whoami")}  # whoami: apply
# issue #19: the scan oracle takes any scanning credential (service, user or ID token)
SCAN_ROUTES = {("POST", "scan/matches"), ("POST", "scan/leaks")}
_SEGMENT = re.compile(r"[A-Za-z0-9_~.-]{1,256}")
# Forwarded from the browser or CLI; everything else (cookies, Authorization, X-User-Id,
# X-Signature, …) stays here.
FORWARDED_HEADERS = ("Content-Type", "Accept", POLL_TOKEN_HEADER)
WEBHOOK_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
RETURNED_HEADERS = (
    "Content-Type",
    "Content-Disposition",
    "Retry-After",
    "Allow",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)


def is_forwardable(rest: str) -> bool:
    """Plain segments only: no dot segments, no odd characters, never `internal/…`."""
    segments = rest.split("/")
    if any(not _SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
        return False
    return segments[0] != "internal"


def is_terminal_route(identity: Identity, rest: str) -> bool:
    """What a terminal's bearer may call (issue #16, `envcat.core.bearer_routes`): a user
    token administers and reads, an admin service token runs bundles as code only."""
    if identity.via_service_token:
        return is_admin_token_route(request.method, rest, request.args.keys())
    return is_user_token_route(rest, request.args.keys())


def is_public(method: str, rest: str) -> bool:
    """True for the routes anyone may call without signing in."""
    return any(method == m and pattern.fullmatch(rest) for m, pattern in PUBLIC_ROUTES)


def is_public_call(call: Request) -> bool:
    """True for a call to a public route: the bff opens no session for it (issue #14)."""
    path = call.path
    return path.startswith(PREFIX) and is_public(call.method, path[len(PREFIX) :])


def _headers(rest: str) -> dict[str, str]:
    names = FORWARDED_HEADERS + (WEBHOOK_HEADERS if rest == "webhooks/clerk" else ())
    headers = {name: value for name in names if (value := request.headers.get(name)) is not None}
    # A service token (issue #16) rides on request creation, a terminal's user token on
    # request creation, whoami and logout, any bearer on scanning (issue #19: the api
    # decides which credential may scan); other bearers stay here.
    authorization = request.headers.get("Authorization", "")
    route = (request.method, rest)
    if (
        (route in BEARER_ROUTES and authorization.startswith(USER_TOKEN_BEARER))
        or (route in SERVICE_TOKEN_ROUTES and authorization.startswith(SERVICE_TOKEN_BEARER))
        or (route in SCAN_ROUTES and authorization.startswith("Bearer "))
    ):
        headers["Authorization"] = authorization
    return headers


def _relay(upstream: Relayed) -> Response:
    response = Response(upstream.content, status=upstream.status_code)
    response.headers.pop("Content-Type", None)
    for name in RETURNED_HEADERS:
        if (value := upstream.header(name)) is not None:
            response.headers[name] = value
    return response


def _target(rest: str) -> str:
    # Segments were checked by is_forwardable; quoting keeps that true whatever it allows.
    path = "/api/v1/" + "/".join(quote(segment, safe="") for segment in rest.split("/"))
    query = request.query_string.decode("latin-1")
    return f"{path}?{query}" if query else path


@bp.route(PREFIX + "<path:rest>", methods=METHODS)
def forward(rest: str) -> Response:
    """Forward one call to the api and relay its status, body and useful headers."""
    if not is_forwardable(rest):
        metrics.PROXY_REJECTED.labels("path").inc()
        return json_error(404, "not_found", "No such endpoint.")
    body = request.get_data(cache=False)
    if is_public(request.method, rest):
        upstream = timed_relay(
            request.method,
            _target(rest),
            signer=None,
            kind="public",
            content=body,
            headers=_headers(rest),
        )
        return _relay(upstream)
    identity = current_identity()
    if identity is None:
        metrics.PROXY_REJECTED.labels("unauthenticated").inc()
        if (refused := bearer_refusal()) is not None:
            return _relay(Relayed.of(refused))  # the token's own 401/403/429, not "sign in"
        return json_error(401, "unauthorized", "Sign in first.")
    if identity.via_user_token and not is_terminal_route(identity, rest):
        metrics.PROXY_REJECTED.labels("user_token").inc()
        return json_error(403, "forbidden", "A terminal's sign-in cannot do this; use the web UI.")
    if request.method not in SAFE_METHODS and not identity.via_bearer:
        # A cookie rides along on cross-site requests; a bearer token does not.
        check_csrf(request.headers.get(CSRF_HEADER))
    upstream = timed_relay(
        request.method,
        _target(rest),
        signer=identity.signer,
        kind="signed",
        content=body,
        headers=_headers(rest),
    )
    return _relay(upstream)
