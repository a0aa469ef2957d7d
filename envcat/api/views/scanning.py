"""Secret-scanning endpoints (issue #19): a hash oracle for the workspace's own values. Thin."""

from __future__ import annotations

from flask import Blueprint

from envcat.api.context import bearer_token, client_origin
from envcat.api.extensions import limiter
from envcat.api.openapi import endpoint
from envcat.core.schemas.scanning import LeakReport, LeaksAlerted, ScanMatches, ScanMatchQuery
from envcat.services import scanning
from envcat.services.runtime import current
from envcat.workers import scan_tasks
from envcat.workers.enqueue import enqueue

bp = Blueprint("scanning", __name__, url_prefix="/api/v1")
# per client address too, so wrong credentials cannot be tried without bound
limiter.limit(lambda: current().settings.request_rate_limit)(bp)


@endpoint(
    bp,
    "/scan/matches",
    "POST",
    summary="Which candidate SHA-256 hashes are the workspace's values (key names only)",
    auth="public",
    body=ScanMatchQuery,
    responses={200: ScanMatches},
    errors=(400, 401, 403, 404, 429),
)
def check_hashes(body: ScanMatchQuery) -> ScanMatches:
    """A credential with the scan permission (Authorization: Bearer) asks; audited with counts."""
    return scanning.check(bearer_token(), body, client_origin())


@endpoint(
    bp,
    "/scan/leaks",
    "POST",
    summary="Raise an alert for each confirmed leak of a workspace value",
    auth="public",
    body=LeakReport,
    responses={200: LeaksAlerted},
    errors=(400, 401, 403, 404, 429, 503),
)
def report_leaks(body: LeakReport) -> LeaksAlerted:
    """Each hash is re-checked; a new leak is audited (`secret.leaked`), then notified."""
    reply, tenant_id, event_ids = scanning.report(bearer_token(), body, client_origin())
    for event_id in event_ids:  # after the audit commit: the task re-reads the event
        enqueue(
            scan_tasks.notify_leak,
            (tenant_id, event_id),
            on_failure=lambda: None,  # the audit event stands; only the notice is lost
            message="The task queue is unavailable; the leak is audited but not notified.",
        )
    return reply
