"""Public request endpoints used by the CLI (DESIGN §5)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("requests", __name__, url_prefix="/api/v1")
