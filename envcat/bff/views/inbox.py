"""The approver inbox (issue #15): the workspace's pending requests, kept fresh by short
polling of a small JSON view (ids, phrases and context only, never a value), and the
requests decided lately."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify

from envcat.bff import backend
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views.audit import who
from envcat.bff.views.forms import page
from envcat.bff.views.pages import CONTEXT_FIELDS
from envcat.core.schemas.audit import AuditPage
from envcat.core.schemas.inbox import Inbox, PendingRequest

bp = Blueprint("inbox", __name__)

POLL_SECONDS = 3  # how often the page asks /requests.json
OUTCOMES = {
    "request.approved": "approved",
    "request.denied": "denied",
    "request.cancelled": "cancelled",
    "request.expired": "expired",
    "request.failed": "failed",
    "request.integrity_failed": "refused (integrity)",
}


def _row(item: PendingRequest, now: float) -> dict[str, Any]:
    """One pending request as the page and its short poll (`/requests.json`) show it."""
    need = item.approvals_required
    facts = [(label, getattr(item.context, field)) for field, label in CONTEXT_FIELDS]
    return {
        "id": item.id,
        "phrase": item.user_code,  # None where approvers must type it: never sent then
        "bundle": item.bundle or "",
        "context": [{"label": label, "value": str(value)} for label, value in facts if value]
        + ([{"label": "Workload", "value": item.workload}] if item.workload else []),
        "age_seconds": max(0, int(now - item.created)),
        "seconds_left": max(0, int(item.expires_at - now)),
        "approvals": f"{item.approvals} of {need}" if need else str(item.approvals),
        "href": f"/approve/{item.id}",
    }


def _pending() -> list[dict[str, Any]]:
    now = time.time()
    return [_row(item, now) for item in backend.fetch(Inbox, "/api/v1/inbox").requests]


@dataclass(frozen=True)
class Decided:
    """One decided request in the page's history table."""

    at: datetime
    id: str
    outcome: str
    by: str
    bundle: str
    bundle_id: str | None  # set while the bundle still exists (a link)
    keys: str


def _decided(history: AuditPage) -> list[Decided]:
    rows = []
    for event in history.events:
        details = event.details
        approvers = details.get("approvers") or []
        by = ", ".join(who(a, history.people) for a in approvers)
        rows.append(
            Decided(
                at=event.at,
                id=event.target,
                outcome=OUTCOMES.get(event.action, event.action),
                by=by or who(event.actor, history.people),
                bundle=event.bundle_name or details.get("bundle_name") or "",
                bundle_id=event.bundle_id if event.bundle_exists else None,
                keys=", ".join(details.get("keys") or []),
            )
        )
    return rows


@bp.get("/requests")
@login_required
def index() -> Response:
    """Pending requests of this workspace (live) and the latest decisions."""
    history = backend.fetch(AuditPage, "/api/v1/inbox/history", {"limit": "25"})
    return page(
        "requests.html",
        identity=current_identity(),
        pending=_pending(),
        decided=_decided(history),
        poll_seconds=POLL_SECONDS,
    )


@bp.get("/requests.json")
@login_required
def pending_json() -> Response:
    """The pending list for the page's short poll: phrases, bundles and context, no values."""
    return jsonify({"requests": _pending()})
