"""Everything a person's decision on one bundle consults, read in one statement (issue #22).

An approval checks the workspace's policy (a typed phrase, a passkey), the bundle's
approver and requester rules, and whether the workspace has a channel for the
decision's notice. Each is a row that usually does not exist (no row is the
default), and a missing row is never cached by the session, so read one by one they
cost five round trips to the database on every approval. Here they are one
statement, outer-joined on the workspace, read inside the approval's own unit of
work (before its commit), so the notice costs no unit of its own either.

The functions that read one of these alone (`phrases.requires_phrase`,
`approvers.rule_of`, `requesters.rule_of`, `passkeys.requires_passkey`,
`notifications.has_channel`) stay for the pages and tasks that need only one; the
approve path takes them from here. Both read the same rows and apply the same rules
(`approvers.rule_from`, `channel_open`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select

from envcat.core.schemas.requesters import Requesters
from envcat.models import (
    BundleApprovers,
    BundleRequesters,
    NotificationTarget,
    Tenant,
    WorkspacePolicy,
    db,
)
from envcat.services import approvers
from envcat.services.errors import NotFound
from envcat.services.requesters import ANYONE, MEMBERS
from envcat.services.runtime import current


def channel_open(
    webhook_url: str | None, email_enabled: bool | None, smtp_host: str | None
) -> bool:
    """Whether notices can go anywhere: a webhook, or email (on unless turned off) via SMTP.

    `webhook_url` and `email_enabled` are the workspace's notification target's
    (both None when it has none).
    """
    wants_email = email_enabled is None or email_enabled
    return bool(webhook_url) or (wants_email and bool(smtp_host))


@dataclass(frozen=True)
class DecisionRules:
    """The rules one bundle's approval is checked against, and where its notice goes."""

    require_phrase: bool
    require_passkey: bool
    approvers: approvers.Rule
    requesters: Requesters
    notice: bool  # the workspace has a channel for the decision's notice


def read(tenant_id: str, bundle_id: str) -> DecisionRules:
    """The workspace's and bundle's rules, in one statement (defaults where no row is).

    `bundle_id` must already be known to be the workspace's (the approve path reads
    it with its keys first); a rule row of another workspace is ignored, as the
    one-by-one readers ignore it. NotFound when the workspace is gone (deleted since).
    """
    row = db.session.execute(
        select(
            WorkspacePolicy.require_phrase,
            WorkspacePolicy.require_passkey,
            BundleRequesters.requesters,
            NotificationTarget.webhook_url,
            NotificationTarget.email_enabled,
            BundleApprovers,
        )
        .select_from(Tenant)
        .outerjoin(WorkspacePolicy, WorkspacePolicy.tenant_id == Tenant.id)
        .outerjoin(NotificationTarget, NotificationTarget.tenant_id == Tenant.id)
        .outerjoin(
            BundleApprovers,
            and_(BundleApprovers.bundle_id == bundle_id, BundleApprovers.tenant_id == Tenant.id),
        )
        .outerjoin(
            BundleRequesters,
            and_(BundleRequesters.bundle_id == bundle_id, BundleRequesters.tenant_id == Tenant.id),
        )
        .where(Tenant.id == tenant_id)
    ).one_or_none()
    if row is None:  # the workspace was deleted since its bundle was read: nothing to approve
        raise NotFound("No such bundle.")
    return DecisionRules(
        require_phrase=bool(row.require_phrase),
        require_passkey=bool(row.require_passkey),
        approvers=approvers.rule_from(row.BundleApprovers, tenant_id, bundle_id),
        requesters=MEMBERS if row.requesters == MEMBERS else ANYONE,
        notice=channel_open(row.webhook_url, row.email_enabled, current().settings.smtp_host),
    )
