"""The approver inbox (issue #15): what waits for a decision in a workspace, and what was decided.

Pending requests come from the workspace's index in Redis (ids and addresses; each request is
read as the approval page reads it). The history is the audit log's decisions, so
it says who decided and what was released without keeping anything new.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from envcat.core.schemas.audit import AuditPage
from envcat.core.schemas.inbox import INBOX_MAX, Inbox, PendingRequest
from envcat.core.schemas.requests import ClientContext
from envcat.models import AuditEvent, Bundle, db
from envcat.services import approvers, audit, phrases
from envcat.services.access_requests import store
from envcat.services.runtime import current

# The audit actions that end a request (or release it): the inbox's history.
DECIDED_ACTIONS = (
    "request.approved",
    "request.denied",
    "request.cancelled",
    "request.expired",
    "request.failed",
    "request.integrity_failed",
)


def _bundle_id(tenant_id: str, request: store.AccessRequest) -> str | None:
    if request.bundle_id:
        return request.bundle_id
    if not request.bundle:
        return None
    statement = select(Bundle.id).where(
        Bundle.tenant_id == tenant_id, Bundle.name == request.bundle
    )
    return db.session.execute(statement).scalar_one_or_none()


def _pending_out(
    tenant_id: str, request: store.AccessRequest, votes: int, hide_phrase: bool
) -> PendingRequest:
    bundle_id = _bundle_id(tenant_id, request)
    need = approvers.rule_of(tenant_id, bundle_id).approvals_required if bundle_id else None
    return PendingRequest(
        id=request.id,
        user_code=None if hide_phrase else request.user_code,  # approvers type it
        bundle=request.bundle,
        bundle_id=request.bundle_id,
        context=ClientContext.model_validate(request.context),
        workload=request.context.get(store.WORKLOAD_FIELD) or None,
        created=request.created,
        expires_at=request.expires_at,
        approvals=votes,
        approvals_required=need,
    )


def pending(tenant_id: str) -> Inbox:
    """The workspace's undecided requests, soonest expiry first (at most INBOX_MAX).

    An approved request whose release is under way has left the inbox: it is decided.
    """
    r = current().redis
    hide_phrase = phrases.requires_phrase(tenant_id)
    listed = []
    for request_id in store.pending_of_tenant(r, tenant_id, time.time(), INBOX_MAX):
        request = store.get(r, request_id)
        if request is None or request.tenant_id != tenant_id:
            continue
        if request.status != "pending" or request.approval is not None:
            continue
        votes = int(r.hlen(approvers.votes_key(request_id)))
        listed.append(_pending_out(tenant_id, request, votes, hide_phrase))
    return Inbox(requests=listed)


def history(tenant_id: str, limit: int) -> AuditPage:
    """The workspace's latest request decisions from the audit log, newest first, named."""
    statement = (
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id, AuditEvent.action.in_(DECIDED_ACTIONS))
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    rows = list(db.session.execute(statement).scalars().all())
    events, people = audit.describe(tenant_id, rows)
    return AuditPage(events=events, next_cursor=None, people=people)
