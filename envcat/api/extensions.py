"""Flask extensions created unbound; the factory binds them (STYLE: app factories)."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

# Storage is set per app from REDIS_URL in create_app (RATELIMIT_STORAGE_URI).
# No X-RateLimit-* headers: they read the window back from Redis (GET + TTL) on every
# limited call, doubling request creation's round trips; a 429 still carries
# Retry-After (envcat/api/errors.py). See docs/performance.md.
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=False)
