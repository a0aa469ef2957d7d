"""What a view needs from the current HTTP request, in one place (issue #13).

The caller's origin for the audit log, the verified caller as a service-layer
actor, and the one `no-store` rule every api reply follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Response, after_this_request, current_app, request

from envcat.api.auth import caller
from envcat.services.audit import Origin
from envcat.services.tenancy import Actor

log = logging.getLogger(__name__)


def client_origin() -> Origin:
    """The caller's address (after ProxyFix or the bff's proof) and user agent, for the audit."""
    return Origin(ip=request.remote_addr, user_agent=request.user_agent.string or None)


def bearer_token() -> str | None:
    """The credential of `Authorization: Bearer …`, if any (service tokens, issue #16)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def current_actor() -> Actor:
    """The verified caller as a service-layer actor, with the request's origin for the audit."""
    who = caller()
    return Actor(tenant_id=who.tenant_id, user_id=who.user_id, origin=client_origin())


def no_store(response: Response) -> Response:
    """after_request on every api reply: it may hold values or a sealed payload; no cache
    (bff, proxy, browser) may keep it."""
    response.headers["Cache-Control"] = "no-store"
    return response


def after_response(work: Callable[[], None]) -> None:
    """Run `work` once the reply has been handed to the server, in a fresh app context.

    For bookkeeping the caller must not wait for (issue #14: the CLI's long poll is
    answered before the delivery's audit append). The WSGI server calls it when it
    closes the reply; an error is logged, never sent (the reply is already gone).
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the real app, past the proxy

    def run() -> None:
        with app.app_context():
            try:
                work()
            except Exception:
                log.exception("work after the response failed")

    @after_this_request
    def _schedule(response: Response) -> Response:
        response.call_on_close(run)
        return response
