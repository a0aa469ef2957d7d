"""Account settings (/account): password, sessions, deletion; Clerk accounts link to Clerk.

Password change and deletion go to the api's signed internal endpoints with the
user id of this server-side session; both need the current password, and a
wrong one counts as a failed sign-in for the throttle. A changed password ends
every other session of the user (and gives this browser a new session id); a
deleted account ends them all.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, session

from envcat.bff import backend
from envcat.bff.apiclient import BFF_SIGNER
from envcat.bff.backend import error_from, fetch, refusal_message, timed_send
from envcat.bff.clerk import frontend_api_host
from envcat.bff.identity import (
    Identity,
    current_identity,
    login_required,
    renew_session,
    sessions,
)
from envcat.bff.runtime import runtime
from envcat.bff.views.forms import submit
from envcat.core.schemas.logins import UserTokenList
from envcat.core.schemas.passkeys import PasskeyList, WorkspacePolicyOut
from envcat.core.settings import Settings

bp = Blueprint("account", __name__)

MAX_PASSWORD_LENGTH = 1024
CHANGE_PATH = "/api/v1/internal/local-auth/change-password"
DELETE_PATH = "/api/v1/internal/local-auth/delete-account"
DEV_SUFFIX = ".clerk.accounts.dev"


def clerk_profile_url(settings: Settings) -> str | None:
    """Clerk's hosted user profile (Account Portal) for this instance, from the publishable key."""
    host = frontend_api_host(settings.clerk_publishable_key)
    if host is None:
        return None
    if host.endswith(DEV_SUFFIX):  # development instance: <slug>.accounts.dev
        return f"https://{host.removesuffix(DEV_SUFFIX)}.accounts.dev/user"
    if host.startswith("clerk."):  # production: clerk.<domain> → accounts.<domain>
        return f"https://accounts.{host.removeprefix('clerk.')}/user"
    return None


def _me() -> Identity:
    identity = current_identity()
    assert identity is not None  # noqa: S101  # login_required ran first
    return identity


def _local_me() -> Identity:
    """The signed-in local account; 404 under Clerk, which manages its own accounts."""
    identity = _me()
    if runtime().settings.auth_provider != "local" or identity.session_id is None:
        abort(404)
    return identity


def _page(status: int = 200, error: str | None = None, **extra: Any) -> Response:
    identity, settings = _me(), runtime().settings
    body = render_template(
        "account.html",
        error=error,
        is_local=settings.auth_provider == "local",
        clerk_profile_url=clerk_profile_url(settings),
        session_count=sessions().count(identity.user_id) if identity.session_id else None,
        passkeys=fetch(PasskeyList, "/api/v1/passkeys").passkeys,  # issue #20
        policy=fetch(WorkspacePolicyOut, "/api/v1/workspace/policy"),  # passkey, typed phrase
        terminals=fetch(UserTokenList, "/api/v1/me/user-tokens").items,  # issue #16: `envcat login`
        **extra,
    )
    return Response(body, status=status, mimetype="text/html")


def _field(name: str) -> str | None:
    """A password field, or None when it is longer than any password may be."""
    value = request.form.get(name, "")
    return value if len(value) <= MAX_PASSWORD_LENGTH else None


def _throttled(identity: Identity) -> Response | None:
    """The sign-in throttle's refusal (a password check is a sign-in guess), or None."""
    refusal = runtime().throttle.admit(request.remote_addr or "-", identity.email)
    if refusal is None:
        return None
    minutes = max(1, round(refusal.retry_after / 60))
    response = _page(429, f"Too many wrong passwords. Try again in {minutes} min.")
    response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def _wrong_password(identity: Identity, message: str) -> Response:
    runtime().throttle.record_failure(request.remote_addr or "-", identity.email)
    return _page(401, message)


def _signed_out(message: str) -> Response:
    session.clear()
    flash(message, "success")
    return redirect("/sign-in")  # type: ignore[return-value]


@bp.get("/account")
@login_required
def account() -> Response:
    """The account settings page."""
    return _page()


@bp.post("/account/password")
@login_required
def change_password() -> Response:
    """Change the password (current one required); end every other session, renew this one."""
    identity = _local_me()
    new, old = _field("new_password"), _field("old_password")
    if new is None:
        return _page(400, f"Use a password of at most {MAX_PASSWORD_LENGTH} characters.")
    if new != _field("new_password_confirm"):
        return _page(400, "The two new passwords differ.")
    if (refused := _throttled(identity)) is not None:
        return refused
    if old is None:
        return _wrong_password(identity, "The current password is wrong.")
    reply = timed_send(
        "POST",
        CHANGE_PATH,
        signer=BFF_SIGNER,
        kind="auth",
        json={"user_id": identity.user_id, "old_password": old, "new_password": new},
    )
    if reply.status_code == 401:
        return _wrong_password(identity, "The current password is wrong.")
    if reply.status_code == 400:
        return _page(400, refusal_message(reply, "Choose another password."))
    if reply.status_code != 200:
        raise error_from(reply)
    ended = renew_session(identity)
    flash(f"Password changed. {_sessions_phrase(ended)} signed out.", "success")
    return redirect("/account")  # type: ignore[return-value]


def _sessions_phrase(count: int) -> str:
    return "1 other session was" if count == 1 else f"{count} other sessions were"


@bp.post("/account/sign-out-others")
@login_required
def sign_out_others() -> Response:
    """End every other session of this user and renew this one (a copied cookie dies too)."""
    identity = _local_me()
    ended = renew_session(identity)
    flash(f"{_sessions_phrase(ended)} signed out.".capitalize(), "success")
    return redirect("/account")  # type: ignore[return-value]


@bp.post("/account/sign-out-everywhere")
@login_required
def sign_out_everywhere() -> Response:
    """End every session of this user, this one included."""
    sessions().revoke_user(_local_me().user_id)
    return _signed_out("You are signed out everywhere.")


@bp.post("/account/delete")
@login_required
def delete_account() -> Response:
    """Delete the account (password required; the api applies the last-owner rule)."""
    identity = _local_me()
    if request.form.get("confirm") != "yes":
        return _page(400, "Tick the box to confirm that the account should be deleted.")
    if (refused := _throttled(identity)) is not None:
        return refused
    wrong = "The password is wrong; the account was not deleted."
    if (password := _field("password")) is None:
        return _wrong_password(identity, wrong)
    reply = timed_send(
        "POST",
        DELETE_PATH,
        signer=BFF_SIGNER,
        kind="auth",
        json={"user_id": identity.user_id, "password": password},
    )
    if reply.status_code == 401:
        return _wrong_password(identity, wrong)
    if reply.status_code == 409:
        return _page(409, refusal_message(reply, "The account cannot be deleted."))
    if reply.status_code != 200:
        raise error_from(reply)
    sessions().revoke_user(identity.user_id)
    return _signed_out("Your account was deleted.")


@bp.post("/account/terminals/<token_id>/revoke")
@login_required
def revoke_terminal(token_id: str) -> Response:
    """Sign a terminal out at once (its `envcat login` token stops working)."""
    return submit(
        "DELETE",
        backend.api_path("/api/v1/me/user-tokens/{id}", id=token_id),
        back="/account",
        done="Terminal signed out.",
    )
