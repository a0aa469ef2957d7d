"""The connectors page (issue #18): connections and links, their last and next sync,
errors, "test" and "sync now". Connections and links are created through the api."""

from __future__ import annotations

from flask import Blueprint, Response

from envcat.bff import backend
from envcat.bff.backend import UpstreamError, api_path
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views.forms import page, submit
from envcat.core.schemas.connectors import ConnectionList, ConnectionOut, LinkList

bp = Blueprint("connectors", __name__)


@bp.get("/connectors")
@login_required
def index() -> Response:
    """Every link of the workspace (any role) and its connections (admins)."""
    links = backend.fetch(LinkList, "/api/v1/links").links
    connections: list[ConnectionOut] | None
    try:
        connections = backend.fetch(ConnectionList, "/api/v1/connections").connections
    except UpstreamError as exc:
        if exc.status != 403:
            raise
        connections = None  # not an admin: links only
    return page(
        "connectors.html", identity=current_identity(), links=links, connections=connections
    )


@bp.post("/connectors/links/<link_id>/sync")
@login_required
def sync_now(link_id: str) -> Response:
    """Queue a sync of one link (admins)."""
    path = api_path("/api/v1/links/{link_id}/sync", link_id=link_id)
    return submit("POST", path, back="/connectors", done="Sync queued.", ok=(202,))


@bp.post("/connectors/connections/<connection_id>/test")
@login_required
def test_connection(connection_id: str) -> Response:
    """Queue a test of one connection's credentials (admins)."""
    path = api_path("/api/v1/connections/{connection_id}/test", connection_id=connection_id)
    return submit("POST", path, back="/connectors", done="Test queued.", ok=(202,))
