"""The key library: list, create, edit, reveal, delete."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, request

from envcat.bff import backend
from envcat.bff.backend import UpstreamError, api_path
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views import reveals
from envcat.bff.views.forms import MASK, checkbox, describe, page, page_params, submit
from envcat.core.schemas.bundles import KeyList, KeyOut, KeyVersionList, KeyVersionOut
from envcat.core.wire import PATH_ID_RE

bp = Blueprint("keys", __name__)


@bp.get("/keys")
@login_required
def index() -> Response:
    """Every key of the tenant, with a search box and the create form."""
    query = request.args.get("q", "").strip()
    listed = backend.fetch(KeyList, "/api/v1/keys", page_params(query))
    return page(
        "keys.html",
        identity=current_identity(),
        keys=listed.keys,
        listed=listed,
        cursor=request.args.get("cursor", ""),
        q=query,
        mask=MASK,
    )


@bp.post("/keys")
@login_required
def create() -> Response:
    """Create a library key."""
    name = request.form.get("name", "").strip()
    body = {
        "name": name,
        "value": request.form.get("value", ""),
        "is_secret": checkbox("is_secret"),
        "description": request.form.get("description", ""),
    }
    return submit("POST", "/api/v1/keys", json=body, back="/keys", done=f"Created {name}.")


def _from_bundle() -> str:
    """The bundle whose page this key page was opened from (`?bundle=` or the form's), or ""."""
    bundle_id = request.values.get("bundle", "")
    return bundle_id if PATH_ID_RE.fullmatch(bundle_id) else ""


def _bundle_back() -> str | None:
    bundle_id = _from_bundle()
    return f"/bundles/{bundle_id}" if bundle_id else None


def _key_page(key_id: str) -> str:
    bundle_id = _from_bundle()
    return f"/keys/{key_id}" + (f"?bundle={bundle_id}" if bundle_id else "")


def _render(
    key_id: str, revealed: str | None = None, version_shown: tuple[int, str] | None = None
) -> Response:
    key = backend.fetch(KeyOut, api_path("/api/v1/keys/{key_id}", key_id=key_id))
    path = api_path("/api/v1/keys/{key_id}/versions", key_id=key_id)
    history = backend.fetch(KeyVersionList, path)
    return page(
        "key.html",
        identity=current_identity(),
        key=key,
        revealed=revealed,
        versions=history.versions,
        version_shown=version_shown,
        mask=MASK,
        bundle_id=_from_bundle(),
    )


def _version_ticket(key_id: str, number: int) -> str:
    return f"{key_id}#v{number}"


def _show_version(key_id: str, token: str) -> Response:
    """Spend a version's reveal ticket: the page shows that old value once (audited by the api)."""
    identity = current_identity()
    ticket = reveals.redeem(identity, token) if identity is not None else None
    prefix = _version_ticket(key_id, 0)[:-1]
    if ticket is None or not ticket.startswith(prefix) or not ticket[len(prefix) :].isdigit():
        flash("That value was shown once already. Press Reveal to see it again.", "success")
        return _render(key_id)
    number = int(ticket[len(prefix) :])
    path = api_path("/api/v1/keys/{key_id}/versions/{n}", key_id=key_id, n=str(number))
    try:
        shown = backend.fetch(KeyVersionOut, path, {"reveal": "true"})
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return _render(key_id)
    return _render(key_id, version_shown=(number, shown.value or ""))


@bp.get("/keys/<key_id>")
@login_required
def show(key_id: str) -> Response:
    """One key with its edit form, and its value once when a reveal ticket (`?reveal=`) is spent."""
    token = request.args.get("reveal", "")
    identity = current_identity()
    if version_token := request.args.get("reveal_version", ""):
        return _show_version(key_id, version_token)
    if not token or identity is None:
        return _render(key_id)
    if reveals.redeem(identity, token, key_id) is None:
        flash("That value was shown once already. Press Reveal to see it again.", "success")
        return _render(key_id)
    try:
        path = api_path("/api/v1/keys/{key_id}", key_id=key_id)
        key = backend.fetch(KeyOut, path, {"reveal": "true"})
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return _render(key_id)
    return _render(key_id, key.value or "")


@bp.post("/keys/<key_id>/reveal")
@login_required
def reveal(key_id: str) -> Response:
    """Leave a reveal ticket and go to the GET page that spends it (post/redirect/get)."""
    identity = current_identity()
    if identity is None or not PATH_ID_RE.fullmatch(key_id):
        raise UpstreamError(404, "not_found", "Not found.")
    token = reveals.issue(identity, key_id)
    bundle_id = _from_bundle()
    also = f"&bundle={bundle_id}" if bundle_id else ""
    return redirect(f"/keys/{key_id}?reveal={token}{also}", 303)  # type: ignore[return-value]


@bp.post("/keys/<key_id>/versions/<int:number>/reveal")
@login_required
def reveal_version(key_id: str, number: int) -> Response:
    """Leave a ticket for one old value and go to the GET page that spends it."""
    identity = current_identity()
    if identity is None or not PATH_ID_RE.fullmatch(key_id):
        raise UpstreamError(404, "not_found", "Not found.")
    token = reveals.issue(identity, _version_ticket(key_id, number))
    bundle_id = _from_bundle()
    also = f"&bundle={bundle_id}" if bundle_id else ""
    target = f"/keys/{key_id}?reveal_version={token}{also}#version-{number}"
    return redirect(target, 303)  # type: ignore[return-value]


@bp.post("/keys/<key_id>/rollback")
@login_required
def rollback(key_id: str) -> Response:
    """Make an old version current again (a new version equal to it); back to the key page."""
    version = request.form.get("version", "")
    if not version.isdigit():
        flash("Choose a version to roll back to.", "error")
        return redirect(_key_page(key_id))  # type: ignore[return-value]
    path = api_path("/api/v1/keys/{key_id}/rollback", key_id=key_id)
    done = f"Rolled back to version {version}: it is the current value again."
    return submit("POST", path, json={"version": int(version)}, back=_key_page(key_id), done=done)


@bp.post("/keys/<key_id>/edit")
@login_required
def edit(key_id: str) -> Response:
    """Rename, describe, change the value (left empty: unchanged) or the secrecy of a key."""
    body: dict[str, Any] = {
        "name": request.form.get("name", "").strip(),
        "description": request.form.get("description", ""),
        "is_secret": checkbox("is_secret"),
    }
    if value := request.form.get("value", ""):
        body["value"] = value
    path = api_path("/api/v1/keys/{key_id}", key_id=key_id)
    return submit("PATCH", path, json=body, back=_key_page(key_id), done="Key saved.")


@bp.post("/keys/<key_id>/delete")
@login_required
def delete(key_id: str) -> Response:
    """Delete a key everywhere (it is detached from every bundle)."""
    try:
        backend.call("DELETE", api_path("/api/v1/keys/{key_id}", key_id=key_id), ok=(204,))
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect(_key_page(key_id))  # type: ignore[return-value]
    flash("Key deleted and detached from every bundle.", "success")
    return redirect(_bundle_back() or "/keys")  # type: ignore[return-value]
