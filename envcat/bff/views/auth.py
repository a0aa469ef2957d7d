"""Sign-in, sign-up and sign-out, for local accounts (via the api) or Clerk."""

from __future__ import annotations

import logging

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from envcat.bff import metrics
from envcat.bff.apiclient import BFF_SIGNER, ApiUnavailable, reply_as
from envcat.bff.backend import refusal_message, timed_send
from envcat.bff.clerk import frontend_api_host
from envcat.bff.errors import page_error
from envcat.bff.identity import CLERK_COOKIE, current_identity, end_session, start_session
from envcat.bff.runtime import runtime
from envcat.bff.security import safe_redirect_target
from envcat.bff.throttle import REASON_DELAY, REASON_NETWORK, REASON_PAIR
from envcat.core.schemas.accounts import AccountOut

log = logging.getLogger("envcat.bff")
bp = Blueprint("auth", __name__)

DEFAULT_AFTER_SIGN_IN = "/bundles"
MAX_EMAIL_LENGTH = 320
MAX_PASSWORD_LENGTH = 1024
SIGN_UP_PROBLEM = "Use a valid email and a password of at least 10 characters."
SIGN_UP_CLOSED = "Sign-up is closed on this server. Ask an administrator for an account."
# The same words for a new account and for an email that already has one (no oracle).
SIGNED_UP = (
    "Your account is ready: sign in with the email and password you chose. "
    "If this email already had an account, its password has not changed."
)
_PREFILL = "sign_in_email"
_REFUSALS = {
    REASON_PAIR: "Too many failed attempts from here. Try again in {minutes} min.",
    REASON_NETWORK: "Too many failed attempts from here. Try again in {minutes} min.",
    REASON_DELAY: (
        "Too many failed attempts for this account. Try again in {minutes} min, "
        "or sign in from your usual network."
    ),
}


def _target() -> str:
    value = request.values.get("redirect_url")
    return safe_redirect_target(value, DEFAULT_AFTER_SIGN_IN)


def _form(template: str, status: int = 200, error: str | None = None, email: str = "") -> Response:
    settings = runtime().settings
    body = render_template(
        template,
        error=error,
        email=email,
        redirect_url=_target(),
        allow_signup=settings.allow_signup,
        clerk_publishable_key=settings.clerk_publishable_key,
        clerk_host=frontend_api_host(settings.clerk_publishable_key),
    )
    return Response(body, status=status, mimetype="text/html")


def _credentials() -> tuple[str, str] | None:
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    if not email or not password:
        return None
    if len(email) > MAX_EMAIL_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        return None
    return email, password


REFUSED_MESSAGE = (
    "You are signed in with Clerk, but this EnvCat server has no active account for you "
    "(it may have been removed). Ask an administrator, or sign out and use another account."
)


def _entry_page(local_template: str) -> Response:
    if current_identity() is not None:
        return redirect(_target())  # type: ignore[return-value]
    if runtime().clerk is None:
        return _form(local_template, email=str(session.pop(_PREFILL, "")))
    if g.get("clerk_refused") and not request.args.get("signed_out"):
        # The Clerk page with signed_out=1 signs them out of Clerk, then offers sign-in.
        link = ("/sign-in?signed_out=1", "Sign out of Clerk")
        return page_error(403, REFUSED_MESSAGE, title="No access", link=link)
    return _form("clerk_sign_in.html")


@bp.get("/sign-in")
def sign_in() -> Response:
    """The sign-in form (or Clerk's sign-in component)."""
    return _entry_page("sign_in.html")


@bp.post("/sign-in")
def sign_in_submit() -> Response:
    """Check email and password with the api; throttle failures per IP and email."""
    if runtime().clerk is not None:
        return redirect("/sign-in")  # type: ignore[return-value]
    credentials = _credentials()
    if credentials is None:
        return _form("sign_in.html", 400, "Enter your email and password.")
    email, password = credentials
    ip = request.remote_addr or "-"
    throttle = runtime().throttle
    if (refusal := throttle.admit(ip, email)) is not None:
        metrics.SIGN_INS.labels("throttled").inc()
        minutes = max(1, round(refusal.retry_after / 60))
        message = _REFUSALS[refusal.reason].format(minutes=minutes)
        response = _form("sign_in.html", 429, message, email)
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response
    reply = timed_send(
        "POST",
        "/api/v1/internal/local-auth/sign-in",
        signer=BFF_SIGNER,
        kind="auth",
        json={"email": email, "password": password},
    )
    if reply.status_code == 200:
        throttle.clear(ip, email)
        metrics.SIGN_INS.labels("success").inc()
        start_session(reply_as(AccountOut, reply))
        return redirect(_target())  # type: ignore[return-value]
    if reply.status_code in (400, 401):
        throttle.record_failure(ip, email)
        metrics.SIGN_INS.labels("failure").inc()
        return _form("sign_in.html", 401, "Wrong email or password.", email)
    log.warning("sign-in failed upstream", extra={"status": reply.status_code})
    raise ApiUnavailable(503, "Signing in is unavailable right now; retry in a moment.")


@bp.get("/sign-up")
def sign_up() -> Response:
    """The sign-up form (or Clerk's sign-up component)."""
    return _entry_page("sign_up.html")


@bp.post("/sign-up")
def sign_up_submit() -> Response:
    """Create a local account through the api, then send the person to sign in."""
    if runtime().clerk is not None:
        return redirect("/sign-up")  # type: ignore[return-value]
    credentials = _credentials()
    if credentials is None:
        return _form("sign_up.html", 400, "Enter an email and a password.")
    email, password = credentials
    if not runtime().throttle.allow_signup(request.remote_addr or "-"):
        return _form("sign_up.html", 429, "Too many sign-ups from here; try later.", email)
    reply = timed_send(
        "POST",
        "/api/v1/internal/local-auth/sign-up",
        signer=BFF_SIGNER,
        kind="auth",
        json={"email": email, "password": password},
    )
    if reply.status_code in (201, 409):
        # Taken or not, the same answer: the new account is not signed in here, so the
        # page cannot differ (docs/security.md, "Uniform sign-up answer").
        flash(SIGNED_UP, "success")
        session[_PREFILL] = email
        return redirect(url_for("auth.sign_in", redirect_url=_target()))  # type: ignore[return-value]
    if reply.status_code == 403:
        return _form("sign_up.html", 403, SIGN_UP_CLOSED, email)
    if reply.status_code == 400:
        return _form("sign_up.html", 400, refusal_message(reply, SIGN_UP_PROBLEM), email)
    log.warning("sign-up failed upstream", extra={"status": reply.status_code})
    raise ApiUnavailable(503, "Signing up is unavailable right now; retry in a moment.")


@bp.post("/sign-out")
def sign_out() -> Response:
    """Revoke this session (POST only, with CSRF, so no link can sign anyone out)."""
    end_session()
    response = redirect("/sign-in?signed_out=1")
    response.delete_cookie(CLERK_COOKIE)
    return response  # type: ignore[return-value]
