"""Wire models of Clerk's webhook payloads and of the bff's JIT call (DESIGN §5).

Only the fields EnvCat uses are kept: everything else Clerk sends (image urls,
metadata, phone numbers) is dropped at the edge and never reaches the broker.
Timestamps are Clerk's milliseconds since the epoch.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from envcat.core.schemas.accounts import EMAIL_RE, MAX_EMAIL, normalise_email

# Clerk ids (`user_…`, `org_…`) become user and tenant ids, which the bff puts in
# signed headers: hold them to the signature's id alphabet.
ClerkId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")]
Millis = Annotated[int, Field(ge=0)]
ShortText = Annotated[str, Field(max_length=1000)]


def valid_email(value: str | None) -> str | None:
    """The normalised address, or None when `value` is missing or not an email address."""
    if value is None:
        return None
    email = normalise_email(value)
    return email if len(email) <= MAX_EMAIL and EMAIL_RE.fullmatch(email) else None


def display_name(*parts: str | None) -> str | None:
    """Join the non-empty parts with a space; None when nothing is left."""
    joined = " ".join(p.strip() for p in parts if p and p.strip())
    return joined or None


class ClerkEnvelope(BaseModel):
    """`{"type", "object": "event", "timestamp", "data"}`; `data` is parsed by type."""

    type: Annotated[str, Field(max_length=200)]
    data: dict[str, Any]
    timestamp: Millis | None = None


class ClerkEmailAddress(BaseModel):
    """One entry of a user's `email_addresses`."""

    id: ShortText
    email_address: ShortText


class ClerkUser(BaseModel):
    """`user.created` / `user.updated` data."""

    id: ClerkId
    email_addresses: list[ClerkEmailAddress] = Field(default_factory=list, max_length=100)
    primary_email_address_id: ShortText | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    username: ShortText | None = None
    updated_at: Millis

    def primary_email(self) -> str | None:
        """The primary address, normalised; None when absent or malformed."""
        for entry in self.email_addresses:
            if entry.id == self.primary_email_address_id:
                return valid_email(entry.email_address)
        return None

    def name(self) -> str | None:
        """First and last name, else the username."""
        return display_name(self.first_name, self.last_name) or display_name(self.username)


class ClerkDeletedObject(BaseModel):
    """`user.deleted` / `organization.deleted` data: `{"id", "deleted": true, "object"}`."""

    id: ClerkId
    deleted: bool = True


class ClerkOrganization(BaseModel):
    """`organization.created` / `organization.updated` data, also nested in memberships."""

    id: ClerkId
    name: ShortText = ""
    slug: ShortText | None = None  # Clerk's org slug becomes the workspace slug when free
    updated_at: Millis


class ClerkPublicUserData(BaseModel):
    """The member as a membership event describes it."""

    user_id: ClerkId
    first_name: ShortText | None = None
    last_name: ShortText | None = None


class ClerkMembership(BaseModel):
    """`organizationMembership.created|updated|deleted` data."""

    organization: ClerkOrganization
    public_user_data: ClerkPublicUserData
    role: Annotated[str, Field(max_length=200)]
    updated_at: Millis


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "user.created": ClerkUser,
    "user.updated": ClerkUser,
    "user.deleted": ClerkDeletedObject,
    "organization.created": ClerkOrganization,
    "organization.updated": ClerkOrganization,
    "organization.deleted": ClerkDeletedObject,
    "organizationMembership.created": ClerkMembership,
    "organizationMembership.updated": ClerkMembership,
    "organizationMembership.deleted": ClerkMembership,
}


class ClerkWebhookAck(BaseModel):
    """POST /webhooks/clerk: the delivery is stored (or was already, or is not for us)."""

    ok: bool = True
    duplicate: bool = False
    ignored: bool = False


class ClerkJitRequest(BaseModel):
    """POST /internal/clerk/jit: the claims of a verified Clerk session token."""

    user_id: ClerkId
    email: ShortText | None = None
    name: ShortText | None = None
    org_id: ClerkId | None = None
    org_name: ShortText | None = None
    org_slug: ShortText | None = None
    org_role: Annotated[str, Field(max_length=200)] | None = None
