"""Signed endpoints: the tenant's audit log (DESIGN §5)."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.openapi import endpoint
from envcat.core.schemas.bundles import AuditPage, AuditQuery
from envcat.services import tenancy

bp = signed_blueprint("audit")


@endpoint(
    bp,
    "/audit",
    "GET",
    summary="The tenant's audit events, newest first, cursor-paginated",
    auth="signed",
    query=AuditQuery,
    responses={200: AuditPage},
)
def list_audit(query: AuditQuery) -> AuditPage:
    """Any role may read the log: it holds names, ids and origins, never values."""
    return tenancy.list_events(caller().tenant_id, query)
