"""Wire models of issue #17's device keys and grants.

A request may carry a `device` block (the CLI's Ed25519 key and its signature over the
request); an approval may ask for a grant (`grant_hours`); a bundle's grant policy says
how many hours at most (0 = no grants, the default).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_GRANT_HOURS = 24  # a hard cap whatever a bundle's policy says
DEFAULT_GRANT_HOURS = 12  # what the bundle page suggests when grants are turned on
GrantHours = Annotated[int, Field(ge=1, le=MAX_GRANT_HOURS)]


class DeviceProof(BaseModel):
    """POST /requests `device`: the device key, a unix timestamp and the signature over
    `envcat.core.device.request_message` of this request's fields and that timestamp."""

    model_config = ConfigDict(strict=True, extra="forbid")

    public_key: Annotated[str, Field(min_length=44, max_length=44)]
    timestamp: Annotated[int, Field(ge=0, le=2**40)]
    signature: Annotated[str, Field(min_length=88, max_length=88)]


class GrantPolicy(BaseModel):
    """GET/PUT /bundles/{id}/grant-policy: at most how many hours a grant may last (0 = none)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    max_hours: Annotated[int, Field(ge=0, le=MAX_GRANT_HOURS)]


class GrantOut(BaseModel):
    """One grant as the bundle page and `GET /grants` list it."""

    id: str
    bundle_id: str
    bundle_name: str
    device: str
    keys: list[str]
    approved_by: str
    approved_by_email: str
    approvers: list[str]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    is_active: bool


class GrantList(BaseModel):
    """GET /grants (?bundle_id=): the workspace's grants, newest first."""

    items: list[GrantOut]


class GrantQuery(BaseModel):
    """GET /grants?bundle_id=: one bundle's grants, or every grant of the workspace."""

    model_config = ConfigDict(extra="ignore")

    bundle_id: Annotated[str, Field(min_length=1, max_length=36)] | None = None
