"""Passkeys on the account page and the approval page's statement (issue #20).

The browser runs the WebAuthn ceremonies (static/passkeys.js); this blueprint
relays them to the api as the signed-in person: registration options and
results, rename and removal (forms), the owner's "require a passkey" and
"approvers type the phrase" settings, and the statement an approval's (or a
break-glass release's) passkey signs (with the typed phrase, which the api checks
before the ceremony where the workspace requires it). The
JSON routes answer `{"error", "message"}` on refusal, so the page's script can
show the message.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from envcat.bff import backend
from envcat.bff.backend import UpstreamError
from envcat.bff.errors import json_error
from envcat.bff.identity import login_required
from envcat.bff.views.forms import checkbox, submit

bp = Blueprint("passkeys", __name__)


def _json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _relay(method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Response:
    """The api's JSON reply to the page's script, as it came (the bff reads none of it)."""
    try:
        reply = backend.call(method, path, json=body, ok=ok)
    except UpstreamError as exc:
        return json_error(exc.status, exc.code, exc.message)
    return Response(reply.content, status=200, mimetype="application/json")


@bp.post("/account/passkeys/options")
@login_required
def registration_options() -> Response:
    """Options for navigator.credentials.create, with a one-use challenge."""
    return _relay("POST", "/api/v1/passkey-challenges")


@bp.post("/account/passkeys")
@login_required
def register() -> Response:
    """The browser's new credential and its name; the api verifies and stores it."""
    body = _json_body()
    return _relay(
        "POST",
        "/api/v1/passkeys",
        {"name": body.get("name"), "credential": body.get("credential")},
        ok=(201,),
    )


@bp.post("/account/passkeys/<passkey_id>/rename")
@login_required
def rename(passkey_id: str) -> Response:
    """Rename a passkey (form)."""
    return submit(
        "PATCH",
        backend.api_path("/api/v1/passkeys/{id}", id=passkey_id),
        back="/account",
        done="Passkey renamed.",
        json={"name": request.form.get("name", "")},
    )


@bp.post("/account/passkeys/<passkey_id>/delete")
@login_required
def remove(passkey_id: str) -> Response:
    """Remove a passkey (form)."""
    return submit(
        "DELETE",
        backend.api_path("/api/v1/passkeys/{id}", id=passkey_id),
        back="/account",
        done="Passkey removed.",
    )


@bp.post("/account/workspace-policy")
@login_required
def workspace_policy() -> Response:
    """The owner's "require a passkey" and "approvers type the phrase" switches (form)."""
    required, typed = checkbox("require_passkey"), checkbox("require_phrase")
    return submit(
        "PUT",
        "/api/v1/workspace/policy",
        back="/account",
        done=f"Approvals in this workspace {'now' if required else 'no longer'} need a passkey. "
        f"Approvers {'now' if typed else 'no longer'} type the verification phrase.",
        json={"require_passkey": required, "require_phrase": typed},
    )


@bp.post("/approve/<request_id>/statement")
@login_required
def statement(request_id: str) -> Response:
    """The statement to sign for the chosen bundle and keys, and the assertion's options.

    The break-glass form also sends its `reason`: the passkey then signs it (the api
    validates it as it validates the release's reason).
    """
    body = _json_body()
    try:
        path = backend.api_path("/api/v1/requests/{id}/approval-statement", id=request_id)
    except UpstreamError as exc:
        return json_error(exc.status, exc.code, exc.message)
    asked = {"bundle_id": body.get("bundle_id"), "include_keys": body.get("include_keys")}
    for optional in ("reason", "phrase"):  # the phrase: where approvers must type it
        if optional in body:
            asked[optional] = body[optional]
    return _relay("POST", path, asked)
