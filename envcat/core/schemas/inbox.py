"""The approver inbox (issue #15): a workspace's pending requests and its decided ones."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from envcat.core.schemas.requests import ClientContext

INBOX_MAX = 200  # pending requests listed at most (soonest expiry first)
HISTORY_MAX = 100


class PendingRequest(BaseModel):
    """One undecided request, as its approval page shows it; never a value or a key.

    `approvals` is how many approvers have approved so far (k-of-n), `approvals_required`
    the named bundle's k, or null when the request names no bundle of this workspace.
    """

    id: str
    user_code: str | None  # None where the workspace requires approvers to type it
    bundle: str | None
    bundle_id: str | None
    context: ClientContext
    workload: str | None
    created: float
    expires_at: float
    approvals: int
    approvals_required: int | None


class Inbox(BaseModel):
    """GET /inbox: the caller's workspace's pending requests, soonest expiry first."""

    requests: list[PendingRequest]


class HistoryQuery(BaseModel):
    """GET /inbox/history?limit=."""

    model_config = ConfigDict(extra="ignore")

    limit: Annotated[int, Field(ge=1, le=HISTORY_MAX)] = 25
