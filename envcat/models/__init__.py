"""SQLAlchemy models (DESIGN §3). Imports nothing from the layers above."""

from envcat.models.base import Base, db, utcnow
from envcat.models.passkeys import Passkey, WorkspacePolicy
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

__all__ = [
    "ROLES",
    "AuditEvent",
    "Base",
    "Bundle",
    "BundleKey",
    "Key",
    "KeyVersion",
    "Membership",
    "MembershipRemoval",
    "Passkey",
    "Tenant",
    "User",
    "WebhookEvent",
    "WorkspacePolicy",
    "db",
    "new_uuid",
    "utcnow",
]
