"""Wire models of issue #17's groups, per-bundle editors and break-glass approvals."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from envcat.core.schemas.bundles import KeyName, ObjectId
from envcat.core.schemas.passkeys import BreakGlassReason, PasskeyAssertion, TypedPhrase
from envcat.core.schemas.requests import MAX_INCLUDE_KEYS
from envcat.core.schemas.team import (
    MAX_NAMED_APPROVERS,
    MAX_RULE_GROUPS,
    GroupId,
    GroupRef,
    UserId,
)

GroupName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w .-]*$"
    ),
]
MAX_GROUP_MEMBERS = 500
EditorRole = Literal["owner", "admin", "member"]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class GroupCreate(_Body):
    """POST /groups: a new group, optionally with its first members."""

    name: GroupName
    description: Annotated[str, Field(max_length=500)] = ""
    user_ids: Annotated[list[UserId], Field(max_length=MAX_GROUP_MEMBERS)] = []


class GroupUpdate(_Body):
    """PATCH /groups/{id}: rename, re-describe, or replace the members."""

    name: GroupName | None = None
    description: Annotated[str, Field(max_length=500)] | None = None
    user_ids: Annotated[list[UserId], Field(max_length=MAX_GROUP_MEMBERS)] | None = None


class GroupMemberOut(BaseModel):
    """A member of a group."""

    user_id: str
    email: str


class GroupOut(BaseModel):
    """A group with its members."""

    id: str
    name: str
    description: str
    members: list[GroupMemberOut]


class GroupList(BaseModel):
    """GET /groups."""

    groups: list[GroupOut]


class EditorsUpdate(_Body):
    """PUT /bundles/{id}/editors: a minimum role, named users and groups (null role = named)."""

    min_role: EditorRole | None = "admin"
    user_ids: Annotated[list[UserId], Field(max_length=MAX_NAMED_APPROVERS)] = []
    group_ids: Annotated[list[GroupId], Field(max_length=MAX_RULE_GROUPS)] = []


class EditorsOut(BaseModel):
    """Who may edit this bundle; `is_default` when no rule was set (admins and owners)."""

    bundle_id: str
    min_role: EditorRole | None
    users: list[GroupMemberOut]
    groups: list[GroupRef]
    is_default: bool
    can_edit: bool  # the caller


Reason = BreakGlassReason  # the one rule, shared with the approval statement (issue #20)


class BreakGlass(_Body):
    """POST /requests/{id}/break-glass: an owner releases alone, saying why."""

    bundle_id: ObjectId
    include_keys: Annotated[list[KeyName], Field(min_length=1, max_length=MAX_INCLUDE_KEYS)]
    reason: Reason
    passkey: PasskeyAssertion | None = None
    phrase: TypedPhrase | None = None  # where the workspace requires approvers to type it
