"""SQLAlchemy models (DESIGN §3). Imports nothing from the layers above."""

from envcat.models.base import Base, db, utcnow
from envcat.models.connectors import Connection, Link, LinkItem
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
    "Connection",
    "Key",
    "KeyVersion",
    "Link",
    "LinkItem",
    "Membership",
    "MembershipRemoval",
    "Tenant",
    "User",
    "WebhookEvent",
    "db",
    "new_uuid",
    "utcnow",
]
