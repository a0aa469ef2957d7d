"""The audit log page: filters, paging, and CSV/JSON downloads of the filtered view."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, request

from envcat.bff import backend
from envcat.bff.apiclient import wire_time
from envcat.bff.backend import UpstreamError
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views.forms import describe, page
from envcat.core.schemas.audit import AuditEventOut, AuditPage, AuditPeople, PersonOut
from envcat.core.schemas.bundles import BundleList
from envcat.core.schemas.compliance import ComplianceReport

bp = Blueprint("audit", __name__)

AUDIT_PAGE_SIZE = 50
EXPORT_BATCH = 200
# A download stops here; narrow the filter (dates, person) for more.
EXPORT_MAX_EVENTS = 10_000
# The form's fields, as the page's own query string.
FILTER_FIELDS = ("action", "person", "bundle", "target", "from", "to")
# Starting points for the action filter (any prefix works).
ACTION_HINTS = (
    "request",
    "request.approved",
    "request.granted",
    "request.denied",
    "request.delivered",
    "request.cancelled",
    "request.expired",
    "request.failed",
    "bundle",
    "bundle.exported",
    "bundle.imported",
    "key",
    "key.revealed",
    "grant",
)
MACHINES = {"cli": "Terminal (envcat CLI)", "system": "EnvCat (workers)"}
CSV_COLUMNS = ("at", "who", "actor", "action", "target", "bundle", "keys", "ip", "user_agent")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _filters() -> dict[str, str]:
    return {name: request.args.get(name, "").strip() for name in FILTER_FIELDS}


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def api_params(filters: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """The api's query for the form's filters, and a message for a field that makes no sense.

    Dates are whole days in UTC: `from` counts from its midnight, `to` includes its day.
    """
    params = {
        api_name: filters[field]
        for field, api_name in (
            ("action", "action"),
            ("person", "actor"),
            ("bundle", "bundle_id"),
            ("target", "target"),
        )
        if filters[field]
    }
    start, end = _day(filters["from"]), _day(filters["to"])
    if (filters["from"] and start is None) or (filters["to"] and end is None):
        return params, "Dates look like 2026-03-10."
    if start and end and end < start:
        return params, "The end date is before the start date."
    if start:
        params["since"] = f"{start.isoformat()}T00:00:00Z"
    if end:
        params["until"] = f"{(end + timedelta(days=1)).isoformat()}T00:00:00Z"
    return params, None


def who(actor: str, people: Mapping[str, PersonOut]) -> str:
    """A person's email (or a label for the CLI and the workers, an admin token's name);
    the raw id otherwise."""
    if actor in MACHINES:
        return MACHINES[actor]
    person = people.get(actor)
    return (person.email or person.name if person else None) or actor


@bp.get("/audit")
@login_required
def index() -> Response:
    """The tenant's audit events, newest first, filtered, a page at a time."""
    filters = _filters()
    params, problem = api_params(filters)
    cursor = request.args.get("cursor", "").strip()
    data = AuditPage(events=[], next_cursor=None, people={})
    if problem is None:
        query = {**params, "limit": str(AUDIT_PAGE_SIZE), **({"cursor": cursor} if cursor else {})}
        try:
            data = backend.fetch(AuditPage, "/api/v1/audit", query)
        except UpstreamError as exc:
            if exc.status != 400:
                raise
            problem = describe(exc)
    people = backend.fetch(AuditPeople, "/api/v1/audit/people").people
    bundles = backend.fetch(BundleList, "/api/v1/bundles").bundles
    return page(
        "audit.html",
        400 if problem else 200,
        identity=current_identity(),
        events=data.events,
        people=data.people,
        next_cursor=data.next_cursor,
        is_first_page=not cursor,
        filters=filters,
        active={k: v for k, v in filters.items() if v},
        problem=problem,
        person_choices=[(p.id, p.email or p.id) for p in people],
        machines=MACHINES,
        bundle_choices=[(b.id, b.name) for b in bundles],
        action_hints=ACTION_HINTS,
        who=who,
    )


REQUEST_ENDINGS = ("delivered", "cancelled", "expired", "denied", "failed")


def request_state(request_id: str) -> str | None:
    """What this tenant's log says became of a request that is gone from the api.

    `delivered`, `cancelled`, `expired`, `denied`, `failed` or `approved`; None when
    the log of this workspace never saw it (another workspace's request looks unknown).
    """
    try:
        data = backend.fetch(AuditPage, "/api/v1/audit", {"target": request_id, "limit": "20"})
    except UpstreamError:
        return None
    actions = [event.action for event in data.events]
    for action in actions:  # newest first: the last thing that happened
        if (ending := action.removeprefix("request.")) in REQUEST_ENDINGS:
            return ending
    return "approved" if "request.approved" in actions else None


def _all_events(
    params: dict[str, str],
) -> tuple[list[AuditEventOut], dict[str, PersonOut], bool]:
    events: list[AuditEventOut] = []
    people: dict[str, PersonOut] = {}
    cursor = ""
    while len(events) < EXPORT_MAX_EVENTS:
        query = {**params, "limit": str(EXPORT_BATCH), **({"cursor": cursor} if cursor else {})}
        data = backend.fetch(AuditPage, "/api/v1/audit", query)
        events += data.events
        people.update(data.people)
        cursor = data.next_cursor or ""
        if not cursor:
            return events, people, False
    return events[:EXPORT_MAX_EVENTS], people, True


def _cell(value: object) -> str:
    text = "" if value is None else str(wire_time(value))
    # A spreadsheet would run a cell starting with = + - @ as a formula.
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_row(event: AuditEventOut, people: Mapping[str, PersonOut]) -> list[str]:
    keys = event.details.get("keys")
    if not isinstance(keys, list):
        keys = []
    row = {
        "at": event.at,
        "who": who(event.actor, people),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "bundle": event.bundle_name or "",
        "keys": " ".join(str(k) for k in keys),
        "ip": event.ip,
        "user_agent": event.user_agent,
    }
    return [_cell(row[column]) for column in CSV_COLUMNS]


@bp.get("/audit/export.<fmt>")
@login_required
def export(fmt: str) -> Response:
    """Every event of the filtered view (up to EXPORT_MAX_EVENTS) as CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise UpstreamError(404, "not_found", "Not found.")
    params, problem = api_params(_filters())
    if problem is not None:
        raise UpstreamError(400, "validation_error", problem)
    events, people, truncated = _all_events(params)
    if fmt == "json":
        document = {
            "events": [event.model_dump(mode="json") for event in events],
            "people": {key: person.model_dump(mode="json") for key, person in people.items()},
            "truncated": truncated,
        }
        body = json.dumps(document, ensure_ascii=False, sort_keys=True)  # as the api orders it
        response = Response(body, mimetype="application/json")
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(_csv_row(event, people) for event in events)
        response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="envcat-audit.{fmt}"'
    if truncated:
        response.headers["X-Envcat-Truncated"] = str(EXPORT_MAX_EVENTS)
    return response


# ---- compliance report (issue #19) ----------------------------------------------------

REPORT_DEFAULT_DAYS = 30
REPORT_CSV_COLUMNS = (
    "section",
    "at",
    "who",
    "actor",
    "action",
    "bundle_or_name",
    "keys",
    "outcome",
    "outcome_at",
    "delivered_to_ip",
    "delivered_to_agent",
    "target",
)


def _report_period() -> tuple[dict[str, str], dict[str, str], str | None]:
    """The form's days (defaulting to the last 30 days) and the api's since/until for them."""
    today = datetime.now(UTC).date()  # the log's days are UTC days, whatever the host's zone
    days = {
        "from": request.args.get("from", "").strip()
        or (today - timedelta(days=REPORT_DEFAULT_DAYS - 1)).isoformat(),
        "to": request.args.get("to", "").strip() or today.isoformat(),
    }
    params, problem = api_params({"action": "", "person": "", "bundle": "", "target": "", **days})
    return days, params, problem


def _report_rows(report: ComplianceReport) -> list[list[str]]:
    rows: list[dict[str, Any]] = []
    for release in report.releases:
        rows.append(
            {
                "section": "release",
                "at": release.approved_at,
                "actor": release.approved_by,
                "action": "request.approved",
                "bundle_or_name": release.bundle_name or release.bundle_id or "",
                "keys": " ".join(release.keys),
                "outcome": release.outcome,
                "outcome_at": release.outcome_at,
                "delivered_to_ip": release.delivered_to_ip,
                "delivered_to_agent": release.delivered_to_agent,
                "target": release.request_id,
            }
        )
    for section, decisions in (
        ("denial", report.denials),
        ("access", report.accesses),
        ("change", report.changes),
    ):
        for item in decisions:
            rows.append(
                {
                    "section": section,
                    "at": item.at,
                    "actor": item.actor,
                    "action": item.action,
                    "bundle_or_name": item.name or "",
                    "target": item.target,
                }
            )
    for row in rows:
        row["who"] = who(row["actor"], report.people)
    return [[_cell(row.get(column)) for column in REPORT_CSV_COLUMNS] for row in rows]


@bp.get("/audit/report")
@login_required
def report_page() -> Response:
    """A printable compliance report of a period: releases, denials, accesses, changes."""
    days, params, problem = _report_period()
    report: ComplianceReport | None = None
    if problem is None:
        try:
            report = backend.fetch(ComplianceReport, "/api/v1/audit/report", params)
        except UpstreamError as exc:
            if exc.status != 400:
                raise
            problem = describe(exc)
    return page(
        "audit_report.html",
        400 if problem else 200,
        identity=current_identity(),
        report=report,
        days=days,
        problem=problem,
        who=who,
    )


@bp.get("/audit/report.<fmt>")
@login_required
def report_download(fmt: str) -> Response:
    """The same report as JSON (the api's document) or CSV (one row per release or decision)."""
    if fmt not in ("csv", "json"):
        raise UpstreamError(404, "not_found", "Not found.")
    days, params, problem = _report_period()
    if problem is not None:
        raise UpstreamError(400, "validation_error", problem)
    report = backend.fetch(ComplianceReport, "/api/v1/audit/report", params)
    if fmt == "json":
        document = json.dumps(report.model_dump(mode="json"), ensure_ascii=False, sort_keys=True)
        response = Response(document, mimetype="application/json")
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(REPORT_CSV_COLUMNS)
        writer.writerows(_report_rows(report))
        response = Response(out.getvalue(), mimetype="text/csv")
    name = f"envcat-report-{days['from']}-to-{days['to']}.{fmt}"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
