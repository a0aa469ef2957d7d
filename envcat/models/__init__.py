"""SQLAlchemy models (DESIGN §3). Imports nothing from the layers above."""

from envcat.models.audit_sinks import AuditSink
from envcat.models.base import Base, db, utcnow
from envcat.models.connectors import Connection, Link, LinkItem
from envcat.models.grants import BundleGrantPolicy, DeviceGrant
from envcat.models.groups import BundleEditors, BundleRuleGroup, Group, GroupMember
from envcat.models.passkeys import Passkey, WorkspacePolicy
from envcat.models.requesters import BundleRequesters
from envcat.models.tables import (
    ROLES,
    AuditEvent,
    Bundle,
    BundleKey,
    Key,
    KeyVersion,
    Membership,
    MembershipRemoval,
    Tenant,
    User,
    WebhookEvent,
    new_uuid,
)
from envcat.models.team import BundleApprovers, Invite, NotificationTarget
from envcat.models.user_tokens import UserToken
from envcat.models.workloads import ServiceToken, WorkloadPolicy

__all__ = [
    "ROLES",
    "AuditEvent",
    "AuditSink",
    "Base",
    "Bundle",
    "BundleApprovers",
    "BundleEditors",
    "BundleGrantPolicy",
    "BundleKey",
    "BundleRequesters",
    "BundleRuleGroup",
    "Connection",
    "DeviceGrant",
    "Group",
    "GroupMember",
    "Invite",
    "Key",
    "KeyVersion",
    "Link",
    "LinkItem",
    "Membership",
    "MembershipRemoval",
    "NotificationTarget",
    "Passkey",
    "ServiceToken",
    "Tenant",
    "User",
    "UserToken",
    "WebhookEvent",
    "WorkloadPolicy",
    "WorkspacePolicy",
    "db",
    "new_uuid",
    "utcnow",
]
