"""The public bff: web UI, sign-in, and the `/api/v1/*` proxy that signs authenticated calls.

It imports only `envcat.core` from EnvCat and talks to the api over HTTP; it
holds no database connection (DESIGN §1).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from envcat.bff import metrics
from envcat.bff.apiclient import wire_time
from envcat.bff.errors import register_error_handlers
from envcat.bff.identity import CSRF_FIELD, CSRF_HEADER, check_csrf, csrf_token
from envcat.bff.runtime import EXTENSION_KEY, build_runtime
from envcat.bff.security import SessionInterface, install_security_headers, session_secret
from envcat.core import tracing
from envcat.core.logging import request_id_var
from envcat.core.settings import Settings, load_settings
from envcat.core.wire import REQUEST_ID_HEADER, clean_request_id

SESSION_LIFETIME = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Blueprints whose POSTs come from our own forms and must carry the CSRF token.
# The proxy checks its own (public CLI routes have no session to protect).
FORM_BLUEPRINTS = frozenset(
    {
        "auth",
        "pages",
        "bundles",
        "keys",
        "account",
        "workspaces",
        "team",
        "passkeys",
        "connectors",
        "grants",
        "requesters",
    }
)


def _bind_request_id() -> None:
    g.request_id = clean_request_id(request.headers.get(REQUEST_ID_HEADER)) or secrets.token_hex(8)
    request_id_var.set(g.request_id)


def _check_form_csrf() -> None:
    if request.method in SAFE_METHODS or request.blueprint not in FORM_BLUEPRINTS:
        return
    check_csrf(request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER))


def _finish(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    endpoint = request.endpoint or "unmatched"
    metrics.HTTP_REQUESTS.labels(endpoint, str(response.status_code)).inc()
    return response


def _template_globals() -> dict[str, Any]:
    return {"signed_in": g.get("identity")}


def _configure(app: Flask, settings: Settings, sessionless: Callable[[Request], bool]) -> None:
    app.config.update(
        SECRET_KEY=session_secret(settings),
        SESSION_COOKIE_NAME="envcat_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.session_interface = SessionInterface(sessionless)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the bff from explicit settings (tests) or the environment (wsgi)."""
    from envcat.bff.views import (
        account,
        audit,
        auth,
        bundles,
        connectors,
        grants,
        groups,
        health,
        inbox,
        keys,
        pages,
        passkeys,
        proxy,
        requesters,
        team,
        workloads,
        workspaces,
    )

    settings = settings or load_settings(needs_kms_key=False)
    tracing.setup(settings, "bff")
    app = Flask(__name__)
    # X-Forwarded-For/-Proto only from the TRUSTED_PROXIES reverse proxies (e.g. 1 behind a
    # TLS terminator); with none, the client address is the socket's.
    hops = settings.trusted_proxies
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    # The CLI's public relay routes carry no session: none is opened for them.
    _configure(app, settings, proxy.is_public_call)
    app.extensions[EXTENSION_KEY] = build_runtime(settings)
    app.before_request(_bind_request_id)
    app.before_request(_check_form_csrf)
    app.after_request(_finish)
    install_security_headers(app, settings)
    register_error_handlers(app)
    app.context_processor(_template_globals)
    # Globals (unlike context values) reach imported macros too.
    app.jinja_env.globals.update(csrf_token=csrf_token, auth_provider=settings.auth_provider)
    app.jinja_env.filters["wire_time"] = wire_time  # times as the api wrote them
    blueprints = (
        health,
        auth,
        account,
        pages,
        passkeys,
        workspaces,
        bundles,
        keys,
        workloads,
        audit,
        inbox,
        connectors,
        team,
        groups,
        grants,
        requesters,
        proxy,
    )
    for module in blueprints:
        app.register_blueprint(module.bp)
    tracing.instrument_app(app, public=True)  # the internet may not continue its own traces
    return app
