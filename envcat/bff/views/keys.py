"""The key library (list, create, edit, reveal, delete) and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, request

from envcat.bff import backend
from envcat.bff.backend import UpstreamError, api_path
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views.forms import MASK, checkbox, describe, page, submit

bp = Blueprint("keys", __name__)

AUDIT_PAGE_SIZE = 50


@bp.get("/keys")
@login_required
def index() -> Response:
    """Every key of the tenant, with a search box and the create form."""
    query = request.args.get("q", "").strip()
    keys = backend.fetch("/api/v1/keys", {"q": query} if query else None)["keys"]
    return page("keys.html", identity=current_identity(), keys=keys, q=query, mask=MASK)


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


def _render(key_id: str, revealed: str | None = None) -> Response:
    key = backend.fetch(api_path("/api/v1/keys/{key_id}", key_id=key_id))
    return page("key.html", identity=current_identity(), key=key, revealed=revealed, mask=MASK)


@bp.get("/keys/<key_id>")
@login_required
def show(key_id: str) -> Response:
    """One key with its edit form."""
    return _render(key_id)


@bp.post("/keys/<key_id>/reveal")
@login_required
def reveal(key_id: str) -> Response:
    """Show the value in clear (audited by the api; never cached)."""
    try:
        path = api_path("/api/v1/keys/{key_id}", key_id=key_id)
        key: dict[str, Any] = backend.fetch(path, {"reveal": "true"})
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect(f"/keys/{key_id}")  # type: ignore[return-value]
    return _render(key_id, key.get("value") or "")


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
    back = f"/keys/{key_id}"
    path = api_path("/api/v1/keys/{key_id}", key_id=key_id)
    return submit("PATCH", path, json=body, back=back, done="Key saved.")


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
        return redirect(f"/keys/{key_id}")  # type: ignore[return-value]
    flash("Key deleted and detached from every bundle.", "success")
    return redirect("/keys")  # type: ignore[return-value]


@bp.get("/audit")
@login_required
def audit() -> Response:
    """The tenant's audit events, newest first, a page at a time."""
    action = request.args.get("action", "").strip()
    cursor = request.args.get("cursor", "").strip()
    params = {"limit": str(AUDIT_PAGE_SIZE)}
    if action:
        params["action"] = action
    if cursor:
        params["cursor"] = cursor
    data = backend.fetch("/api/v1/audit", params)
    return page(
        "audit.html",
        identity=current_identity(),
        events=data.get("events", []),
        next_cursor=data.get("next_cursor"),
        action=action,
        is_first_page=not cursor,
    )
