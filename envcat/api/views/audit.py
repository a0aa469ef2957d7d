"""Signed endpoints: the tenant's audit log and the people in it (DESIGN §5)."""

from __future__ import annotations

import json

from flask import Response

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.audit import AuditPage, AuditPeople, AuditQuery
from envcat.core.schemas.audit_sink import AuditSinkIn, AuditSinkOut, ExportQuery
from envcat.core.schemas.compliance import ComplianceReport, ReportQuery
from envcat.services import audit, audit_sinks, compliance

bp = signed_blueprint("audit")


@endpoint(
    bp,
    "/audit",
    "GET",
    summary="The tenant's audit events, newest first, filtered and cursor-paginated",
    auth="signed",
    query=AuditQuery,
    responses={200: AuditPage},
)
def list_audit(query: AuditQuery) -> AuditPage:
    """Any role may read the log: it holds names, ids and origins, never values."""
    return audit.list_events(caller().tenant_id, query)


@endpoint(
    bp,
    "/audit/people",
    "GET",
    summary="Everyone who acted in the tenant's audit log, with email and name",
    auth="signed",
    responses={200: AuditPeople},
)
def list_audit_people() -> AuditPeople:
    """The choices of the log's person filter; any role."""
    return audit.list_people(caller().tenant_id)


@endpoint(
    bp,
    "/audit/report",
    "GET",
    summary="A compliance report of one period: releases, denials, reveals, changes, chain check",
    auth="signed",
    query=ReportQuery,
    responses={200: ComplianceReport},
)
def compliance_report(query: ReportQuery) -> ComplianceReport:
    """Any role, like the log it is made from: it holds names and origins, never values."""
    return compliance.report(caller().tenant_id, query)


@endpoint(
    bp,
    "/audit/export",
    "GET",
    summary="The log as JSON lines, oldest first, with each event's chain hashes",
    auth="signed",
    query=ExportQuery,
    responses={200: None},
)
def export_audit(query: ExportQuery) -> Response:
    """Any role, like the log; `X-Envcat-Next-After` is the `after` of the next page."""
    events, following = audit_sinks.export(caller().tenant_id, query)
    body = "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in events)
    response = Response(body, content_type="application/x-ndjson")
    if following is not None:
        response.headers["X-Envcat-Next-After"] = str(following)
    return response


@endpoint(
    bp,
    "/audit/sink",
    "GET",
    summary="Where the log is streamed (syslog over TCP/TLS) and how far it has been shipped",
    auth="signed",
    responses={200: AuditSinkOut},
    errors=(403, 404),
)
def get_sink() -> AuditSinkOut:
    """Admins and owners."""
    who = caller()
    who.require("admin")
    return audit_sinks.get(who.tenant_id)


@endpoint(
    bp,
    "/audit/sink",
    "PUT",
    summary="Stream the log to a syslog collector (RFC 5424, octet-counted, TLS by default)",
    auth="signed",
    body=AuditSinkIn,
    responses={200: AuditSinkOut},
    errors=(400, 403),
)
def put_sink(body: AuditSinkIn) -> AuditSinkOut:
    """Admins and owners; audited. A new host or port receives the whole log from the start."""
    caller().require("admin")
    return audit_sinks.configure(current_actor(), body)


@endpoint(
    bp,
    "/audit/sink",
    "DELETE",
    summary="Stop streaming the log",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def delete_sink() -> tuple[str, int]:
    """Admins and owners; audited."""
    caller().require("admin")
    audit_sinks.remove(current_actor())
    return "", 204
