"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import text

from envcat.api.openapi import build_spec
from envcat.core import exposition
from envcat.models import db
from envcat.services.errors import NotFound, Unauthorized
from envcat.services.runtime import current

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive."""
    return jsonify(status="ok")


def _check(name: str, probe: object) -> tuple[str, bool]:
    try:
        probe()  # type: ignore[operator]
    except Exception:  # any failure means "not ready"; the type is reported
        return name, False
    return name, True


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Database, Redis and the broker all answer."""
    runtime = current()
    celery = current_app.extensions["celery"]

    def broker() -> None:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    checks = dict(
        [
            _check("database", lambda: db.session.execute(text("SELECT 1"))),
            _check("redis", runtime.redis.ping),
            _check("broker", broker),
        ]
    )
    ok = all(checks.values())
    return jsonify(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503


@bp.get("/metrics")
def metrics_view() -> Response:
    """Prometheus exposition, for a scraper with the METRICS_TOKEN bearer token only."""
    allowed = exposition.is_authorized(
        current().settings.metrics_token, request.headers.get("Authorization")
    )
    if allowed is None:
        raise NotFound("Not found.")
    if not allowed:
        raise Unauthorized("Send Authorization: Bearer <METRICS_TOKEN>.")
    body, content_type = exposition.render()
    return Response(body, content_type=content_type)


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document, generated from the request/response models."""
    return jsonify(build_spec())
