"""Wire models of the compliance report (issue #19): who got which keys, and who changed what.

A report covers one period of one workspace's audit log, `since` inclusive and
`until` exclusive. It is built from the hash-chained log alone, so it says only
what the log can prove, and it carries the chain's verification result.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from envcat.core.schemas.audit import PersonOut, UtcTime

REPORT_MAX_DAYS = 366
Outcome = Literal["delivered", "expired", "cancelled", "failed", "pending"]


class ReportQuery(BaseModel):
    """GET /audit/report?since=&until= (ISO 8601; UTC when no zone is given)."""

    model_config = ConfigDict(extra="ignore")

    since: UtcTime
    until: UtcTime

    @model_validator(mode="after")
    def _sane_period(self) -> ReportQuery:
        if self.until <= self.since:
            raise ValueError("until must be later than since")
        if self.until - self.since > timedelta(days=REPORT_MAX_DAYS):
            raise ValueError(f"a report covers at most {REPORT_MAX_DAYS} days")
        return self


class Release(BaseModel):
    """One approval in the period: which keys of which bundle, and what became of them.

    `delivered_to_*` is the address and user agent of the terminal that collected
    the values (the event's origin); `outcome` is `pending` when nothing followed
    yet, and may be recorded after the period ended.
    """

    request_id: str
    approved_at: datetime
    approved_by: str
    bundle_id: str | None
    bundle_name: str | None
    keys: list[str]
    outcome: Outcome
    outcome_at: datetime | None
    delivered_to_ip: str | None
    delivered_to_agent: str | None


class Decision(BaseModel):
    """A denial, a reveal, an export or a change: who did what to which object."""

    at: datetime
    actor: str
    action: str
    target: str
    name: str | None


class BundleSummary(BaseModel):
    """Per bundle: how often it was released, to how many, and which keys left."""

    bundle_id: str
    name: str | None
    approvals: int
    deliveries: int
    expiries: int
    keys_released: dict[str, int]
    approvers: list[str]


class PersonSummary(BaseModel):
    """Per person (or machine actor): what they did in the period."""

    actor: str
    email: str | None
    approvals: int
    denials: int
    reveals: int
    exports: int
    changes: int


class ChainResult(BaseModel):
    """The whole log's hash chain, walked when the report was made."""

    events: int
    intact: bool
    broken_at: int | None


class WorkspaceOut(BaseModel):
    """The workspace the report is about."""

    id: str
    name: str
    slug: str


class ComplianceReport(BaseModel):
    """Everything the period's log says about access to values, and about changes."""

    workspace: WorkspaceOut
    since: datetime
    until: datetime
    generated_at: datetime
    chain: ChainResult
    events: int
    totals: dict[str, int]
    releases: list[Release]
    denials: list[Decision]
    accesses: list[Decision]
    changes: list[Decision]
    by_bundle: list[BundleSummary]
    by_person: list[PersonSummary]
    people: dict[str, PersonOut]
