"""Wire model of issue #17's "who may request" rule of a bundle."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Requesters = Literal["anyone", "members"]


class RequestersRule(BaseModel):
    """GET/PUT /bundles/{id}/requesters: "anyone" (with the link, the default) or "members"
    (terminals signed in with `envcat login` as a member of the workspace)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    requesters: Requesters
