"""Signed endpoints: the tenant's audit log and the people in it (DESIGN §5)."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.openapi import endpoint
from envcat.core.schemas.audit import AuditPage, AuditPeople, AuditQuery
from envcat.core.schemas.compliance import ComplianceReport, ReportQuery
from envcat.services import audit, compliance

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
