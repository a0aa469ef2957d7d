"""Clerk webhook payloads as Clerk documents them, and applying them as the task does."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from envcat.models import (
    Membership,
    WebhookEvent,
    db,
)
from envcat.services import integrity, provisioning


def user_data(
    user_id: str,
    *,
    email: str | None = None,
    first: str | None = "Ada",
    last: str | None = "Lovelace",
    username: str | None = None,
    updated_at: int = 1_000,
) -> dict[str, Any]:
    """`user.created|updated` data; a secondary address comes first to prove the choice."""
    email = email or f"{user_id.lower()}@example.test"
    return {
        "id": user_id,
        "object": "user",
        "email_addresses": [
            {"id": "idn_secondary", "object": "email_address", "email_address": "x" + email},
            {"id": "idn_primary", "object": "email_address", "email_address": email},
        ],
        "primary_email_address_id": "idn_primary",
        "first_name": first,
        "last_name": last,
        "username": username,
        "image_url": "https://img.clerk.com/x",
        "public_metadata": {},
        "private_metadata": {"internal": "never stored"},
        "created_at": 1,
        "updated_at": updated_at,
    }


def deleted_data(object_id: str, kind: str = "user") -> dict[str, Any]:
    """`user.deleted` / `organization.deleted` data."""
    return {"id": object_id, "object": kind, "deleted": True}


def org_data(org_id: str, name: str = "Acme", *, updated_at: int = 1_000) -> dict[str, Any]:
    """`organization.created|updated` data."""
    return {
        "id": org_id,
        "object": "organization",
        "name": name,
        "slug": name.lower(),
        "members_count": 1,
        "created_at": 1,
        "updated_at": updated_at,
    }


def membership_data(
    org_id: str,
    user_id: str,
    role: str = "org:member",
    *,
    updated_at: int = 1_000,
    org_name: str = "Acme",
) -> dict[str, Any]:
    """`organizationMembership.created|updated|deleted` data."""
    return {
        "id": f"orgmem_{uuid.uuid4().hex[:12]}",
        "object": "organization_membership",
        "role": role,
        "permissions": [],
        "organization": org_data(org_id, org_name, updated_at=1),
        "public_user_data": {
            "user_id": user_id,
            "first_name": "Grace",
            "last_name": "Hopper",
            "identifier": f"{user_id.lower()}@example.test",
            "image_url": "https://img.clerk.com/y",
            "has_image": False,
        },
        "created_at": 1,
        "updated_at": updated_at,
    }


def clerk_event(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The envelope Clerk posts."""
    return {
        "type": event_type,
        "object": "event",
        "timestamp": 1_700_000_000_000,
        "data": data,
        "event_attributes": {"http_request": {"client_ip": "", "user_agent": ""}},
    }


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def apply(event_type: str, data: dict[str, Any], event_id: str | None = None) -> bool:
    """Record the delivery as the webhook view does, then apply it as the task does."""
    event_id = event_id or new_id("msg")
    if db.session.get(WebhookEvent, event_id) is None:
        db.session.add(WebhookEvent(id=event_id, type=event_type))
        db.session.commit()
    mac = integrity.event_mac(event_id, event_type, data)  # as the webhook view MACs it
    return provisioning.apply_event(event_id, event_type, data, mac)


def fresh(model: Any, key: Any) -> Any:
    db.session.expire_all()
    return db.session.get(model, key)


def role_of(user_id: str, tenant_id: str) -> str | None:
    member = fresh(Membership, (user_id, tenant_id))
    return None if member is None else str(member.role)


def count(model: Any, *where: Any) -> int:
    statement = select(func.count()).select_from(model).where(*where)
    return int(db.session.execute(statement).scalar_one())
