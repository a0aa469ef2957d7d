"""Signed endpoints: keys (DESIGN §5)."""

from __future__ import annotations

from envcat.api.auth import signed_blueprint

bp = signed_blueprint("keys")
