"""SQLAlchemy models (DESIGN §3). Imports nothing from the layers above."""

from envcat.models.audit_sinks import AuditSink
from envcat.models.base import Base, db, utcnow
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
    "AuditSink",
    "Base",
    "Bundle",
    "BundleKey",
    "Key",
    "KeyVersion",
    "Membership",
    "MembershipRemoval",
    "Tenant",
    "User",
    "WebhookEvent",
    "db",
    "new_uuid",
    "utcnow",
]
