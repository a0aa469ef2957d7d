"""Errors as JSON under /api/ (DESIGN §5 shape) and as friendly pages elsewhere."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from envcat.bff.apiclient import ApiUnavailable
from envcat.bff.backend import UpstreamError
from envcat.bff.identity import CsrfFailed, Identity, back_path, current_identity, end_session
from envcat.core.wire import error_body, error_code

log = logging.getLogger("envcat.bff")

_TITLES = {
    400: "That did not work",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Already changed",
    413: "Too large",
    429: "Too many attempts",
    500: "Something went wrong",
    502: "EnvCat is unavailable",
    503: "EnvCat is unavailable",
}


# Our words for the stock HTTP errors (werkzeug's descriptions talk about "the server").
_MESSAGES = {
    404: "There is nothing at this address. It may have been deleted, or the link is mistyped.",
    405: "This page cannot be used that way.",
}


def _viewer() -> Identity | None:
    # The header shows who is signed in, even on pages no view handled (404s).
    try:
        return current_identity()
    except Exception:  # an error page must render even when the session store is down
        return None


def wants_json() -> bool:
    """API clients get JSON; browsers on pages get HTML."""
    return request.path.startswith("/api/")


def json_error(status: int, code: str, message: str) -> Response:
    """`{"error", "message"}` with the given status."""
    response = jsonify(error_body(code, message))
    response.status_code = status
    return response


def page_error(
    status: int,
    message: str,
    title: str | None = None,
    link: tuple[str, str] = ("/", "Go to the start page"),
) -> Response:
    """Render the error page with the given status and one way forward (href, label)."""
    body = render_template(
        "error.html",
        status=status,
        title=title or _TITLES.get(status, "Error"),
        message=message,
        link=link,
        signed_in=_viewer(),
    )
    return Response(body, status=status, mimetype="text/html")


def error_response(status: int, code: str, message: str) -> Response:
    """JSON for /api/ paths, a page for everything else."""
    return json_error(status, code, message) if wants_json() else page_error(status, message)


def register_error_handlers(app: Flask) -> None:
    """Map every failure to a 4xx/5xx in the right shape; never a traceback."""

    @app.errorhandler(CsrfFailed)
    def _csrf(exc: CsrfFailed) -> Response:
        return error_response(403, "csrf_failed", exc.description or "CSRF check failed.")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        stock = exc.description == type(exc).description
        message = (_MESSAGES.get(status) if stock else None) or exc.description or exc.name
        return error_response(status, error_code(exc.name), message)

    @app.errorhandler(ApiUnavailable)
    def _unavailable(exc: ApiUnavailable) -> Response:
        log.warning("api unavailable", extra={"status": exc.status})
        code = "unavailable" if exc.status == 503 else "bad_gateway"
        return error_response(exc.status, code, exc.message)

    @app.errorhandler(UpstreamError)
    def _upstream(exc: UpstreamError) -> Response:
        if exc.status == 401:
            # The account is gone or the session no longer matches it: sign in again.
            end_session()
            return redirect(url_for("auth.sign_in", redirect_url=back_path()))  # type: ignore[return-value]
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(redis.exceptions.RedisError)
    def _redis_down(exc: redis.exceptions.RedisError) -> Response:
        log.warning("redis unavailable", extra={"error_type": type(exc).__name__})
        return error_response(503, "unavailable", "A backing service is unavailable; retry.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Log type and frames only: the message may quote the data that caused it.
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "Something went wrong on our side.")
