"""Device grants in the web UI (issue #17): a bundle's grant limit, and revoking a grant.

The bundle page lists the bundle's grants (see `bundles._render`); the approval page
offers the tick (see `pages`). These forms only call the api.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from envcat.bff import backend
from envcat.bff.backend import api_path
from envcat.bff.identity import login_required
from envcat.bff.views.forms import submit
from envcat.core.schemas.grants import GrantList, GrantPolicy

bp = Blueprint("grants", __name__)


def grant_policy(bundle_id: str) -> GrantPolicy:
    """The longest grant, in hours, the bundle lets an approver give (0: none)."""
    return backend.fetch(GrantPolicy, api_path("/api/v1/bundles/{id}/grant-policy", id=bundle_id))


def bundle_grants(bundle_id: str) -> dict[str, object]:
    """What the bundle page shows: the grant limit and the bundle's grants."""
    listed = backend.fetch(GrantList, "/api/v1/grants", {"bundle_id": bundle_id})
    return {"grant_policy": grant_policy(bundle_id), "grants": listed.items}


@bp.post("/bundles/<bundle_id>/grant-policy")
@login_required
def set_policy(bundle_id: str) -> Response:
    """Allow grants of at most N hours (0: none)."""
    hours = request.form.get("max_hours", "0").strip()
    body = {"max_hours": int(hours) if hours.isdigit() and len(hours) < 4 else -1}
    path = api_path("/api/v1/bundles/{id}/grant-policy", id=bundle_id)
    back = api_path("/bundles/{id}", id=bundle_id) + "#grants"
    return submit("PUT", path, json=body, back=back, done="Grant limit saved.")


@bp.post("/bundles/<bundle_id>/grants/<grant_id>/revoke")
@login_required
def revoke(bundle_id: str, grant_id: str) -> Response:
    """Revoke one grant: the device's next request waits for a person."""
    path = api_path("/api/v1/grants/{id}", id=grant_id)
    back = api_path("/bundles/{id}", id=bundle_id) + "#grants"
    return submit("DELETE", path, back=back, done="Grant revoked.")
