"""Wire models of the audit log endpoints (DESIGN §5): filters, events, people.

Query models are lenient (query strings are text) and ignore unknown parameters;
an empty text filter (`?action=` from a form) means "not given", and the patterns
say so (they allow the empty string), so the OpenAPI document tells the truth; an
empty `limit`, `since` or `until` is a 400 like any value its schema refuses.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

AUDIT_PAGE_MAX = 200
ACTOR_MAX = 128

_TEXT_FILTERS = frozenset({"cursor", "action", "actor", "bundle_id", "target"})
TargetKind = Literal["bundle", "key", "request", "other", "none"]


def _aware(value: datetime) -> datetime:
    # A time without a zone is UTC, as every time the api hands out.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 has no UTC form
        raise ValueError("must be a time between years 1 and 9999 in UTC") from None


def _iso_text(value: object) -> object:
    # pydantic would read "0.5" or "1700000000" as unix seconds; the documented form
    # (and the OpenAPI `date-time` format) is ISO 8601 only.
    if isinstance(value, str) and re.fullmatch(
        r"[+-]?[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?", value.strip()
    ):
        raise ValueError("must be an ISO 8601 time, e.g. 2026-12-01T09:00:00Z")
    return value


UtcTime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_aware)]


class AuditQuery(BaseModel):
    """GET /audit?cursor=&action=&actor=&bundle_id=&target=&since=&until=&limit=.

    `action` is a prefix on dot boundaries (`request` finds `request.approved`);
    `actor` a user id, `cli` or `system` (it also finds the deliveries and expiries
    of requests that user approved); `bundle_id` the events of one bundle, its
    keys' attach/detach and the requests that released it; `target` one object
    exactly (`bundle:<id>`, `key:<id>`, a request id: a request's whole
    lifecycle); `since` inclusive and
    `until` exclusive (ISO 8601, UTC when no zone is given).
    """

    model_config = ConfigDict(extra="ignore")

    cursor: Annotated[str, Field(max_length=64)] | None = None
    action: Annotated[str, Field(max_length=64, pattern=r"^[a-z_.]*$")] | None = None
    actor: Annotated[str, Field(max_length=ACTOR_MAX, pattern=r"^[A-Za-z0-9_.:@|-]*$")] | None = (
        None
    )
    bundle_id: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]*$")] | None = None
    target: Annotated[str, Field(max_length=255, pattern=r"^[A-Za-z0-9_:-]*$")] | None = None
    since: UtcTime | None = None
    until: UtcTime | None = None
    limit: Annotated[int, Field(ge=1, le=AUDIT_PAGE_MAX)] = 50

    @model_validator(mode="before")
    @classmethod
    def _empty_text_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v == "" and k in _TEXT_FILTERS)}
        return data

    @model_validator(mode="after")
    def _ordered_range(self) -> AuditQuery:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be later than since")
        return self


class PersonOut(BaseModel):
    """A user named in the log (as actor or approver); the log outlives accounts."""

    id: str
    email: str | None
    name: str | None


class AuditEventOut(BaseModel):
    """One audit event; `details` never holds a value.

    `target_kind`/`target_id` split `target` (`bundle:<id>`, `key:<id>`, a request
    id); `target_name` is the object's current name, else the name the event
    recorded; `target_exists` says whether a bundle or key can still be opened.
    `bundle_*` name the bundle the event concerns: its target, or the bundle a
    request released (`details.bundle_id`), or the one a key was attached to.
    """

    id: int
    actor: str
    action: str
    target: str
    target_kind: TargetKind
    target_id: str
    target_name: str | None
    target_exists: bool
    bundle_id: str | None
    bundle_name: str | None
    bundle_exists: bool
    ip: str | None
    user_agent: str | None
    at: datetime
    details: dict[str, Any]


class AuditPage(BaseModel):
    """Newest first; pass `next_cursor` back as `cursor` for the next page.

    `people` names every user id the page mentions (actors and `approved_by`).
    """

    events: list[AuditEventOut]
    next_cursor: str | None
    people: dict[str, PersonOut]


class AuditPeople(BaseModel):
    """Everyone who appears as an actor in the tenant's log (for the person filter)."""

    people: list[PersonOut]
