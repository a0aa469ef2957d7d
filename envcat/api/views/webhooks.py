"""Clerk webhooks, Svix-signed (DESIGN §5)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1")
