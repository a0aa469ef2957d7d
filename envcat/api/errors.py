"""One JSON error shape for every 4xx/5xx (DESIGN §5, STYLE: Errors)."""

from __future__ import annotations

import logging
import time

import redis
from flask import Flask, Response, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from envcat.api.extensions import limiter
from envcat.core.wire import error_body, error_code
from envcat.services.errors import EnvCatError

log = logging.getLogger("envcat.api")


def error_response(status: int, code: str, message: str, details: object = None) -> Response:
    """Build `{"error", "message", "details"?}` with the given status."""
    response = jsonify(error_body(code, message, details))
    response.status_code = status
    return response


def validation_details(exc: ValidationError) -> list[dict[str, object]]:
    """Field errors without the rejected input, which may be a secret."""
    return [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def register_error_handlers(app: Flask) -> None:
    """Map domain, validation, HTTP, backend-down and unexpected errors to the JSON shape."""

    @app.errorhandler(EnvCatError)
    def _domain(exc: EnvCatError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.code in ("rate_limited", "busy") and exc.details:
            response.headers["Retry-After"] = str(exc.details)
        elif exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        return error_response(
            400, "validation_error", "Request is invalid.", validation_details(exc)
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = "rate_limited" if status == 429 else error_code(exc.name)
        response = error_response(status, code, exc.description or exc.name)
        if status == 429 and exc.response is not None and "Retry-After" in exc.response.headers:
            response.headers["Retry-After"] = exc.response.headers["Retry-After"]
        elif status == 429 and (breached := limiter.current_limit) is not None:
            # The limiter's headers are off (two Redis round trips on every call);
            # only a refusal pays for reading the window.
            response.headers["Retry-After"] = str(max(1, int(breached.reset_at - time.time())))
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(OperationalError)
    def _backend_down(exc: Exception) -> Response:
        backend = "database" if isinstance(exc, OperationalError) else "redis"
        log.warning(f"{backend} unavailable", extra={"error_type": type(exc).__name__})
        return error_response(503, "unavailable", "A backing service is unavailable; retry.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The JSON formatter keeps type and frames only: the message may quote the data.
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "Something went wrong on our side.")
