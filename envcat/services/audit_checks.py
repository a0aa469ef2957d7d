"""Scheduled verification of every tenant's audit chain, exported as metrics (issue #21).

`envcat server verify-audit` checks on demand and exits non-zero; this is the same
check run by beat, so an alert (deploy/prometheus) fires on a broken chain, and on a
verification that stopped running.
"""

from __future__ import annotations

import logging
import time

from envcat.models import db
from envcat.services import audit, metrics

log = logging.getLogger("envcat.audit")


def verify_all_chains() -> list[audit.ChainReport]:
    """Verify every tenant's chain, set the audit metrics, log each broken chain (ids only)."""
    try:
        reports = [audit.verify_chain(tenant) for tenant in audit.tenants_with_events()]
    finally:
        # End the read transaction: on SQLite it would hold off the writers' checkpoints.
        db.session.rollback()
    broken = [report for report in reports if not report.is_intact]
    for report in broken:
        log.error(
            "audit chain broken",
            extra={"tenant_id": report.tenant_id, "event_id": report.broken_at},
        )
    metrics.AUDIT_CHAINS_BROKEN.set(len(broken))
    metrics.AUDIT_VERIFIED_AT.set(time.time())
    return reports
