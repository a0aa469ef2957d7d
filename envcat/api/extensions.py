"""Flask extensions created unbound; the factory binds them (STYLE: app factories)."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

# Storage is set per app from REDIS_URL in create_app (RATELIMIT_STORAGE_URI).
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)
