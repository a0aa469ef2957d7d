"""Wire models of workspaces (tenants by slug): the switcher and the owner's rename."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from envcat.core.schemas.accounts import TenantOut


class WorkspaceList(BaseModel):
    """GET /workspaces: every workspace the caller belongs to, and the one the signature names."""

    workspaces: list[TenantOut]
    current: str


class WorkspaceRename(BaseModel):
    """PATCH /workspace: a new slug (what CLIs name with -w; old slugs stop working)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    slug: Annotated[str, Field(min_length=1, max_length=64)]
