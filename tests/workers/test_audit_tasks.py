"""The scheduled audit verification (issue #21) sets the metrics the alert rules watch."""

from __future__ import annotations

import time

import pytest
from celery import Celery
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import update

from envcat.models import AuditEvent, db
from envcat.services import audit, audit_checks
from envcat.workers.factory import TASK_ROUTES

BROKEN = "envcat_audit_chains_broken"
VERIFIED_AT = "envcat_audit_verified_timestamp_seconds"


def _sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def _log_for(tenant: str, events: int) -> list[int]:
    return [audit.record(tenant, "u-1", "key.created", f"key:{i}").id for i in range(events)]


def test_a_tampered_chain_sets_the_gauge_and_a_repair_clears_it(
    service_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    _log_for("t-clean", 3)
    ids = _log_for("t-edited", 3)
    before = time.time()
    reports = audit_checks.verify_all_chains()
    assert {r.tenant_id for r in reports} == {"t-clean", "t-edited"}
    assert _sample(BROKEN) == 0
    assert (_sample(VERIFIED_AT) or 0) >= before

    db.session.execute(
        update(AuditEvent).where(AuditEvent.id == ids[1]).values(actor="canary-forger-1c9")
    )
    db.session.commit()
    audit_checks.verify_all_chains()
    assert _sample(BROKEN) == 1
    line = next(r for r in caplog.records if r.getMessage() == "audit chain broken")
    assert line.tenant_id == "t-edited" and line.event_id == ids[1]  # type: ignore[attr-defined]  # log extras
    assert "canary-forger-1c9" not in caplog.text

    db.session.execute(update(AuditEvent).where(AuditEvent.id == ids[1]).values(actor="u-1"))
    db.session.commit()
    audit_checks.verify_all_chains()
    assert _sample(BROKEN) == 0


def test_beat_schedules_it_on_the_maintenance_queue(celery_app: Celery) -> None:
    schedule = celery_app.conf.beat_schedule["verify-audit-chains"]
    assert schedule["task"] == "envcat.verify_audit_chains"
    assert schedule["schedule"] == float(6 * 3600)
    assert TASK_ROUTES["envcat.verify_audit_chains"] == {"queue": "maintenance"}


def test_a_real_worker_runs_it(celery_app: Celery, celery_worker: object) -> None:
    _log_for("t-worker", 2)
    mark = time.time()
    celery_app.send_task("envcat.verify_audit_chains")
    deadline = time.monotonic() + 30
    while (_sample(VERIFIED_AT) or 0) < mark and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (_sample(VERIFIED_AT) or 0) >= mark
    assert _sample(BROKEN) == 0
