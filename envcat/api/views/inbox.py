"""Signed endpoints: the approver inbox (issue #15). Thin: parse, delegate, reply."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.openapi import endpoint
from envcat.core.schemas.audit import AuditPage
from envcat.core.schemas.inbox import HistoryQuery, Inbox
from envcat.services import inbox

bp = signed_blueprint("inbox")


@endpoint(
    bp,
    "/inbox",
    "GET",
    summary="The workspace's pending access requests (the approver inbox), soonest expiry first",
    auth="signed",
    responses={200: Inbox},
)
def pending_requests() -> Inbox:
    """Any member of the workspace: ids, phrases, bundle hints and context, never a value."""
    return inbox.pending(caller().tenant_id)


@endpoint(
    bp,
    "/inbox/history",
    "GET",
    summary="The workspace's latest request decisions, with who decided and what was released",
    auth="signed",
    query=HistoryQuery,
    responses={200: AuditPage},
)
def decided_requests(query: HistoryQuery) -> AuditPage:
    """Any member: the audit log's request decisions (approved, denied, cancelled, expired…)."""
    return inbox.history(caller().tenant_id, query.limit)
