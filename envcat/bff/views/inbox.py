"""The approver inbox (issue #15): the workspace's pending requests, kept fresh by short
polling of a small JSON view (ids, phrases and context only, never a value), and the
requests decided lately."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify

from envcat.bff import backend
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views.audit import who
from envcat.bff.views.forms import page
from envcat.bff.views.pages import CONTEXT_FIELDS

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


def _row(item: dict[str, Any], now: float) -> dict[str, Any]:
    context = item.get("context") or {}
    need = item.get("approvals_required")
    return {
        "id": item["id"],
        "phrase": item["user_code"],
        "bundle": item.get("bundle") or "",
        "context": [
            {"label": label, "value": str(context[field])}
            for field, label in CONTEXT_FIELDS
            if context.get(field)
        ]
        + ([{"label": "Workload", "value": item["workload"]}] if item.get("workload") else []),
        "age_seconds": max(0, int(now - float(item["created"]))),
        "seconds_left": max(0, int(float(item["expires_at"]) - now)),
        "approvals": f"{item['approvals']} of {need}" if need else str(item["approvals"]),
        "href": f"/approve/{item['id']}",
    }


def _pending() -> list[dict[str, Any]]:
    now = time.time()
    return [_row(item, now) for item in backend.fetch("/api/v1/inbox")["requests"]]


def _decided(history: dict[str, Any]) -> list[dict[str, Any]]:
    people = history.get("people") or {}
    rows = []
    for event in history.get("events") or []:
        details = event.get("details") or {}
        approvers = details.get("approvers") or []
        rows.append(
            {
                "at": event["at"],
                "id": event["target"],
                "outcome": OUTCOMES.get(event["action"], event["action"]),
                "by": ", ".join(who(a, people) for a in approvers) or who(event["actor"], people),
                "bundle": event.get("bundle_name") or details.get("bundle_name") or "",
                "bundle_id": event.get("bundle_id") if event.get("bundle_exists") else None,
                "keys": ", ".join(details.get("keys") or []),
            }
        )
    return rows


@bp.get("/requests")
@login_required
def index() -> Response:
    """Pending requests of this workspace (live) and the latest decisions."""
    history = backend.fetch("/api/v1/inbox/history", {"limit": "25"})
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
