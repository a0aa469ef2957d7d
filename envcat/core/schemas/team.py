"""Wire models of issue #17: members, invitations, per-bundle approvers, notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from envcat.core.schemas.accounts import Email, Role, TenantOut

ApproverRole = Literal["owner", "admin", "member"]
UserId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
MAX_NAMED_APPROVERS = 50
MAX_WEBHOOK_URL = 2000
MAX_APPROVALS_REQUIRED = 10
MAX_RULE_GROUPS = 20
GroupId = Annotated[str, Field(min_length=1, max_length=36, pattern=r"^[A-Za-z0-9-]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# ---- workspaces and members -----------------------------------------------------------


class WorkspaceCreate(_Body):
    """POST /workspaces: a new team workspace; the caller becomes its owner."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    slug: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class MemberOut(BaseModel):
    """One member of the workspace."""

    user_id: str
    email: str
    name: str | None
    role: Role


class MemberList(BaseModel):
    """GET /members; `managed_by` is `clerk` when Clerk is the source of truth (read-only)."""

    members: list[MemberOut]
    managed_by: Literal["envcat", "clerk"]


class RoleChange(_Body):
    """PATCH /members/{user_id}."""

    role: Role


# ---- invitations ----------------------------------------------------------------------


class InviteCreate(_Body):
    """POST /invites: whom to invite and with which role."""

    email: Email
    role: Role = "member"


class InviteOut(BaseModel):
    """An invitation as listed (never its token)."""

    id: str
    email: str
    role: Role
    invited_by: str
    created_at: datetime
    expires_at: datetime
    status: Literal["pending", "accepted", "revoked", "expired"]


class InviteCreated(InviteOut):
    """The reply to POST /invites: the token and link are shown here once, then only hashed."""

    token: str
    link: str
    emailed: bool


class InviteList(BaseModel):
    """GET /invites."""

    invites: list[InviteOut]


class InviteAccept(_Body):
    """POST /join: the invitation token from the link, by the signed-in invitee."""

    token: Annotated[str, Field(min_length=1, max_length=128)]


class InviteAccepted(BaseModel):
    """The workspace joined and the role there."""

    tenant: TenantOut
    role: Role


# ---- per-bundle approvers ----------------------------------------------------------------


class ApproversUpdate(_Body):
    """PUT /bundles/{id}/approvers: a minimum role and/or named users (null role = named only)."""

    min_role: ApproverRole | None = "member"
    user_ids: Annotated[list[UserId], Field(max_length=MAX_NAMED_APPROVERS)] = []
    approvals_required: Annotated[int, Field(ge=1, le=MAX_APPROVALS_REQUIRED)] = 1
    no_self_approval: bool = False  # the requester may not approve their own request
    group_ids: Annotated[list[GroupId], Field(max_length=MAX_RULE_GROUPS)] = []  # groups, below


class ApproverOut(BaseModel):
    """A named approver."""

    user_id: str
    email: str


class ApproversOut(BaseModel):
    """Who may approve this bundle; `is_default` when no rule was set (member and above)."""

    bundle_id: str
    min_role: ApproverRole | None
    users: list[ApproverOut]
    approvals_required: int
    no_self_approval: bool = False
    is_default: bool
    can_approve: bool  # the caller
    groups: list[GroupRef] = []  # whose members may approve too


class GroupRef(BaseModel):
    """A group (team) as a bundle's rule names it (envcat.core.schemas.groups)."""

    id: str
    name: str


class ApprovalRecorded(BaseModel):
    """202 to an approval that still waits for other approvers (k-of-n)."""

    ok: bool = True
    status: Literal["awaiting_approvals"] = "awaiting_approvals"
    approvals: int
    approvals_required: int
    message: str


# ---- notifications ---------------------------------------------------------------------


class NotificationSettingsUpdate(_Body):
    """PUT /notifications: the webhook URL (null removes it) and whether approvers get email."""

    webhook_url: Annotated[str, Field(min_length=1, max_length=MAX_WEBHOOK_URL)] | None = None
    email_enabled: bool = True
    rotate_secret: bool = False


class NotificationSettingsOut(BaseModel):
    """The workspace's notification settings; `webhook_secret` only when just (re)made."""

    webhook_url: str | None
    email_enabled: bool
    email_configured: bool
    webhook_secret: str | None = None
