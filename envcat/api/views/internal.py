"""Internal endpoints for the bff's own identity (local accounts)."""

from __future__ import annotations

from flask import Blueprint

from envcat.api.auth import authenticate_bff

bp = Blueprint("internal", __name__, url_prefix="/api/v1/internal")
bp.before_request(authenticate_bff)
