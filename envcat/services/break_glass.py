"""Break-glass (issue #17): an owner releases alone, past k-of-n or rules that exclude them.

Only an owner of the request's workspace may, always with a reason (one line,
capped). The release is the ordinary approval otherwise: the request must be
this workspace's (404 for anyone else's), the keys are checked, a required
passkey is still required (the owner's own assertion, over a statement that
carries the reason, so the terminal can check it), and the worker seals
the usual signed envelope, which says `break_glass` with the reason so the CLI
warns. It is audited `request.break_glass` (before `request.approved`) and told
to every approver of the bundle and every owner and admin of the workspace.
"""

from __future__ import annotations

from envcat.core.schemas.groups import BreakGlass
from envcat.services import approvers, audit, members
from envcat.services.access_requests import lifecycle
from envcat.services.errors import Forbidden

ACTION = "request.break_glass"


class OwnersOnly(Forbidden):
    """Break-glass is an owner's alone."""

    code = "break_glass_owner_only"


def release(
    request_id: str,
    *,
    tenant_id: str,
    user_id: str,
    role: str,
    body: BreakGlass,
    origin: audit.Origin,
) -> lifecycle.AcceptedApproval:
    """Record an owner's break-glass approval; 403 unless owner, 404 for another workspace's."""
    if role != "owner":  # before looking at the request: a non-owner learns nothing of it
        raise OwnersOnly("Only an owner of this workspace may break glass.")
    return lifecycle.approve(
        request_id,
        tenant_id=tenant_id,
        user_id=user_id,
        bundle_id=body.bundle_id,
        include_keys=body.include_keys,
        origin=origin,
        passkey=body.passkey,
        role=role,
        break_glass=body.reason,
        phrase=body.phrase,  # where the workspace requires it, an owner types it too
    )


def recipients(tenant_id: str, bundle_id: str) -> list[str]:
    """Emails to tell: the bundle's approvers and the workspace's owners and admins."""
    told = [email for _, email in approvers.eligible(tenant_id, bundle_id)]
    leads = members.lead_emails(tenant_id)
    return list(dict.fromkeys([*told, *leads]))
