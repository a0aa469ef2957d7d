"""Who may request a bundle, in the web UI (issue #17): the bundle page's form.

The bundle page shows the rule (see `bundles._render`), the approval page explains it
(see `pages`); this form only calls the api.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from envcat.bff import backend
from envcat.bff.backend import api_path
from envcat.bff.identity import login_required
from envcat.bff.views.forms import submit
from envcat.core.schemas.requesters import RequestersRule

bp = Blueprint("requesters", __name__)


def bundle_requesters(bundle_id: str) -> str:
    """The bundle's rule: "anyone" or "members"."""
    path = api_path("/api/v1/bundles/{id}/requesters", id=bundle_id)
    return backend.fetch(RequestersRule, path).requesters


@bp.post("/bundles/<bundle_id>/requesters")
@login_required
def set_rule(bundle_id: str) -> Response:
    """Anyone with the link, or signed-in members only."""
    body = {"requesters": request.form.get("requesters", "")}  # anything else: the api's 400
    path = api_path("/api/v1/bundles/{id}/requesters", id=bundle_id)
    back = api_path("/bundles/{id}", id=bundle_id) + "#requesters"
    return submit("PUT", path, json=body, back=back, done="Who may request saved.")
