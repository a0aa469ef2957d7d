"""The scheduled audit chain verification (issue #21): thin, id-free, idempotent."""

from __future__ import annotations

from celery import shared_task

from envcat.services import audit_checks
from envcat.workers.tasks import RETRY_OPTIONS


@shared_task(name="envcat.verify_audit_chains", **RETRY_OPTIONS)
def verify_audit_chains() -> None:
    """Recompute every tenant's audit chain and export the result as metrics."""
    audit_checks.verify_all_chains()
