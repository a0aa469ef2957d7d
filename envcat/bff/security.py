"""Security headers on every response, the session cookie's keys and flags, safe redirects."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import Flask, Request, Response, has_request_context, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from envcat.bff.clerk import frontend_api_host
from envcat.core.settings import Settings

SESSION_KEY_LABEL = b"envcat-bff-session-cookie-v1"
MAX_REDIRECT_LENGTH = 2000
STATIC_ENDPOINT = "static"


def session_secret(settings: Settings) -> str:
    """SESSION_SECRET, else a key derived from BFF_SHARED_SECRET (never that secret itself)."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value()
    shared = settings.bff_shared_secret.get_secret_value().encode("utf-8")
    return hmac.new(shared, SESSION_KEY_LABEL, hashlib.sha256).hexdigest()


class SessionInterface(SecureCookieSessionInterface):
    """The signed-cookie session, marked Secure whenever the browser came over HTTPS.

    A request for which `sessionless` is true (the proxy's public relay routes, which
    the CLI calls without a cookie) gets Flask's null session: its cookie is neither
    read nor verified nor written, and any write to it fails loudly (issue #14: opening
    the session was a tenth of the bff's CPU per relayed call).
    """

    def __init__(self, sessionless: Callable[[Request], bool] = lambda _: False) -> None:
        self._sessionless = sessionless

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """No session at all on sessionless routes; the signed cookie's session elsewhere."""
        if self._sessionless(request):
            return None  # Flask then installs make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when this request is HTTPS (ProxyFix reads X-Forwarded-Proto)."""
        if has_request_context() and request.is_secure:
            return True
        return super().get_cookie_secure(app)


def content_security_policy(settings: Settings) -> str:
    """No inline script, no framing; Clerk's Frontend API only when Clerk signs people in."""
    scripts, connect, images, frames, styles = ["'self'"], ["'self'"], ["'self'", "data:"], [], []
    host = frontend_api_host(settings.clerk_publishable_key)
    if settings.auth_provider == "clerk" and host:
        origin = f"https://{host}"
        scripts.append(origin)
        connect.append(origin)
        images.append("https://img.clerk.com")
        frames.append("https://challenges.cloudflare.com")
        # Clerk's components inject their own style elements.
        styles.append("'unsafe-inline'")
    frame_sources = " ".join(frames) if frames else "'none'"
    directives = [
        "default-src 'self'",
        f"script-src {' '.join(scripts)}",
        f"style-src 'self' {' '.join(styles)}".strip(),
        f"img-src {' '.join(images)}",
        f"connect-src {' '.join(connect)}",
        "font-src 'self'",
        f"frame-src {frame_sources}",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def install_security_headers(app: Flask, settings: Settings) -> None:
    """Add the headers of DESIGN §9 to every response, pages, files, errors and proxied calls."""
    policy = content_security_policy(settings)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = policy
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if request.is_secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if request.endpoint != STATIC_ENDPOINT:
            # Pages may show secret values and approval ids: never keep them in a cache.
            response.headers["Cache-Control"] = "no-store"
        return response


def safe_redirect_target(value: str | None, default: str = "/") -> str:
    """Return `value` if it is a same-site relative path, else `default`.

    Refuses `//host`, `/\\host`, schemes, control characters and anything else a
    browser could read as another origin.
    """
    if not value or len(value) > MAX_REDIRECT_LENGTH:
        return default
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(not 0x21 <= ord(char) <= 0x7E for char in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value
