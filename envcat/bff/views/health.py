"""Liveness, readiness and metrics of the bff."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from envcat.bff.apiclient import ApiUnavailable, CallerInfo
from envcat.bff.errors import json_error
from envcat.bff.runtime import runtime
from envcat.core import exposition

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive."""
    return jsonify(status="ok")


def _api_ready() -> bool:
    try:
        reply = runtime().api.send(
            "GET", "/healthz", signer=None, caller=CallerInfo(None, None, None)
        )
    except ApiUnavailable:
        return False
    return reply.status_code == 200


def _redis_ready() -> bool:
    try:
        return bool(runtime().redis.ping())
    except Exception:  # any failure means "not ready"; readiness reports, never raises
        return False


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The api answers and Redis (sign-in throttling) is reachable."""
    checks = {"api": _api_ready(), "redis": _redis_ready()}
    ok = all(checks.values())
    return jsonify(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503


@bp.get("/metrics")
def metrics_view() -> Response:
    """Prometheus exposition, for a scraper with the METRICS_TOKEN bearer token only."""
    allowed = exposition.is_authorized(
        runtime().settings.metrics_token, request.headers.get("Authorization")
    )
    if allowed is None:
        return json_error(404, "not_found", "Not found.")
    if not allowed:
        response = json_error(401, "unauthorized", "Send Authorization: Bearer <METRICS_TOKEN>.")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    body, content_type = exposition.render()
    return Response(body, content_type=content_type)
