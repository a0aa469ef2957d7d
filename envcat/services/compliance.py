"""Compliance reports (issue #19): one period of a workspace's audit log, read as answers.

Who asked for which keys and who approved, where the values went (or that they
expired unclaimed), who was refused, who revealed or exported values, and who
changed bundles, keys, members or policies, per bundle and per person. Built from
the hash-chained log only, never from current state, with the chain's
verification result beside it, so the report claims nothing the log cannot prove.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

from sqlalchemy import func, select

from envcat.core.schemas.audit import AuditEventOut, PersonOut
from envcat.core.schemas.compliance import (
    BundleSummary,
    ChainResult,
    ComplianceReport,
    Decision,
    Outcome,
    PersonSummary,
    Release,
    ReportQuery,
    WorkspaceOut,
)
from envcat.models import AuditEvent, Tenant, db
from envcat.services import audit
from envcat.services.errors import NotFound, ValidationFailed

# A report holds every event of its period in memory; a busier period is split.
REPORT_MAX_EVENTS = 100_000
OUTCOMES: dict[str, Outcome] = {
    "request.delivered": "delivered",
    "request.expired": "expired",
    "request.cancelled": "cancelled",
    "request.failed": "failed",
    "request.integrity_failed": "failed",
}
ACCESSES = frozenset({"key.revealed", "key.version_revealed", "bundle.exported"})
# A person's approval, or a delivery under a device grant a person made earlier (issue #17).
RELEASES = frozenset({"request.approved", "request.granted"})


def report(tenant_id: str, query: ReportQuery) -> ComplianceReport:
    """The workspace's compliance report for `[since, until)`.

    Raises NotFound for an unknown workspace and ValidationFailed when the period
    holds more than REPORT_MAX_EVENTS events (ask for a shorter one).
    """
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None or tenant.deleted_at is not None:
        raise NotFound("No such workspace.")
    in_period = (
        AuditEvent.tenant_id == tenant_id,
        AuditEvent.at >= audit.stored_time(query.since),
        AuditEvent.at < audit.stored_time(query.until),
    )
    count = db.session.execute(select(func.count()).where(*in_period)).scalar_one()
    if count > REPORT_MAX_EVENTS:
        raise ValidationFailed(
            f"The period holds {count} events; a report covers at most {REPORT_MAX_EVENTS}. "
            "Ask for a shorter period."
        )
    rows = list(
        db.session.execute(select(AuditEvent).where(*in_period).order_by(AuditEvent.id)).scalars()
    )
    events, people = audit.describe(tenant_id, rows)
    approvals = [e for e in events if e.action in RELEASES]
    outcomes = _outcomes(tenant_id, [e.target for e in approvals])
    releases = [_release(e, outcomes.get(e.target)) for e in approvals]
    chain = audit.verify_chain(tenant_id)
    return ComplianceReport(
        workspace=WorkspaceOut(id=tenant.id, name=tenant.name, slug=tenant.slug),
        since=query.since,
        until=query.until,
        generated_at=datetime.now(UTC),
        chain=ChainResult(events=chain.events, intact=chain.is_intact, broken_at=chain.broken_at),
        events=len(events),
        totals=dict(sorted(Counter(e.action for e in events).items())),
        releases=releases,
        denials=[_decision(e) for e in events if e.action == "request.denied"],
        accesses=[_decision(e) for e in events if e.action in ACCESSES],
        changes=[_decision(e) for e in events if _is_change(e.action)],
        by_bundle=_by_bundle(releases),
        by_person=_by_person(events, people),
        people=people,
    )


def _is_change(action: str) -> bool:
    return not action.startswith("request.") and action not in ACCESSES


def _outcomes(tenant_id: str, request_ids: list[str]) -> dict[str, AuditEventOut]:
    """The first final event of each request, whenever it was recorded."""
    found: dict[str, AuditEventOut] = {}
    for start in range(0, len(request_ids), 500):
        batch = request_ids[start : start + 500]
        rows = list(
            db.session.execute(
                select(AuditEvent)
                .where(
                    AuditEvent.tenant_id == tenant_id,
                    AuditEvent.target.in_(batch),
                    AuditEvent.action.in_(OUTCOMES),
                )
                .order_by(AuditEvent.id)
            ).scalars()
        )
        described, _ = audit.describe(tenant_id, rows)
        for event in described:
            found.setdefault(event.target, event)
    return found


def _keys(event: AuditEventOut) -> list[str]:
    keys = event.details.get("keys")
    return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []


def _release(approval: AuditEventOut, outcome: AuditEventOut | None) -> Release:
    delivered = outcome is not None and outcome.action == "request.delivered"
    return Release(
        request_id=approval.target,
        approved_at=approval.at,
        approved_by=approval.actor,
        bundle_id=approval.bundle_id,
        bundle_name=approval.bundle_name,
        keys=_keys(approval),
        outcome=OUTCOMES[outcome.action] if outcome is not None else "pending",
        outcome_at=outcome.at if outcome is not None else None,
        delivered_to_ip=outcome.ip if delivered and outcome is not None else None,
        delivered_to_agent=outcome.user_agent if delivered and outcome is not None else None,
    )


def _decision(event: AuditEventOut) -> Decision:
    return Decision(
        at=event.at,
        actor=event.actor,
        action=event.action,
        target=event.target,
        name=event.target_name or event.bundle_name,
    )


def _by_bundle(releases: list[Release]) -> list[BundleSummary]:
    grouped: dict[str, list[Release]] = defaultdict(list)
    for release in releases:
        grouped[release.bundle_id or ""].append(release)
    summaries = []
    for bundle_id, group in grouped.items():
        keys: Counter[str] = Counter()
        for release in group:
            if release.outcome == "delivered":
                keys.update(release.keys)
        summaries.append(
            BundleSummary(
                bundle_id=bundle_id,
                name=next((r.bundle_name for r in group if r.bundle_name), None),
                approvals=len(group),
                deliveries=sum(r.outcome == "delivered" for r in group),
                expiries=sum(r.outcome == "expired" for r in group),
                keys_released=dict(sorted(keys.items())),
                approvers=sorted({r.approved_by for r in group}),
            )
        )
    return sorted(summaries, key=lambda s: ((s.name or "").lower(), s.bundle_id))


def _by_person(events: list[AuditEventOut], people: dict[str, PersonOut]) -> list[PersonSummary]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        if event.action in RELEASES:
            counts[event.actor]["approvals"] += 1
        elif event.action == "request.denied":
            counts[event.actor]["denials"] += 1
        elif event.action == "bundle.exported":
            counts[event.actor]["exports"] += 1
        elif event.action in ACCESSES:
            counts[event.actor]["reveals"] += 1
        elif _is_change(event.action):
            counts[event.actor]["changes"] += 1
    summaries = []
    for actor, tally in counts.items():
        person = people.get(actor)
        summaries.append(
            PersonSummary(
                actor=actor,
                email=person.email if person is not None else None,
                approvals=tally["approvals"],
                denials=tally["denials"],
                reveals=tally["reveals"],
                exports=tally["exports"],
                changes=tally["changes"],
            )
        )
    return sorted(summaries, key=lambda s: (s.email or s.actor).lower())
