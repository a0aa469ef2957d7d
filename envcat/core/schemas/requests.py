"""Wire models of the request lifecycle (DESIGN §5): the CLI's public endpoints and the
signed approve/deny calls.

The CLI's create body ignores unknown fields, so an older server still serves a newer
CLI that sends more context; the signed bodies come from the bff deployed with the
api and refuse unknown fields. Validation messages never quote the rejected input.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from envcat.core.schemas.bundles import BundleName, KeyName, ObjectId
from envcat.core.schemas.grants import DeviceProof, GrantHours
from envcat.core.schemas.passkeys import PasskeyAssertion, TypedPhrase
from envcat.core.wire import MAX_WAIT_SECONDS, WORKSPACE_SLUG_RULE, is_workspace_slug

PUBLIC_KEY_BYTES = 32
MAX_CONTEXT_FIELD = 1024  # accepted; the store keeps the first 200 bytes of each (display only)
MAX_CLIENT = 100
MAX_TEMPLATE_KEYS = 50
MAX_TEMPLATE_KEY_LENGTH = 128
MAX_TEMPLATE_KEYS_TOTAL = 1500  # characters of all names together: the worst request < 4 KB
MAX_INCLUDE_KEYS = 1000
MAX_ID_TOKEN = 16 * 1024
POLL_INTERVAL_SECONDS = 5

RequestStatus = Literal["pending", "ready", "denied", "failed"]


def _public_key(value: str) -> str:
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("must be standard base64 with padding") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"must decode to {PUBLIC_KEY_BYTES} bytes")
    if base64.b64encode(raw).decode("ascii") != value:
        raise ValueError("must be canonical standard base64 with padding")
    return value


def _whole_seconds(value: object) -> object:
    # Query strings are text: only plain decimal digits count ("5", not "5.0" or " 5").
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,3}", value):
        raise ValueError("must be a whole number of seconds")
    return value


def _workspace_slug(value: str) -> str:
    if not is_workspace_slug(value):
        raise ValueError(f"must be a workspace slug: {WORKSPACE_SLUG_RULE}")
    return value


PublicKey = Annotated[str, Field(max_length=64), AfterValidator(_public_key)]
WorkspaceSlug = Annotated[str, Field(max_length=64), AfterValidator(_workspace_slug)]
TemplateKey = Annotated[KeyName, Field(max_length=MAX_TEMPLATE_KEY_LENGTH)]
ContextText = Annotated[str | None, Field(max_length=MAX_CONTEXT_FIELD)]


class ClientContext(BaseModel):
    """Where and why the CLI asks: shown to the approver, never trusted for access."""

    model_config = ConfigDict(strict=True, extra="ignore")

    hostname: ContextText = None
    cwd: ContextText = None
    command: ContextText = None
    git_remote: ContextText = None
    client: Annotated[str | None, Field(max_length=MAX_CLIENT)] = None


class AccessRequestCreate(BaseModel):
    """POST /requests: the CLI's X25519 public key and hints for the approval page."""

    model_config = ConfigDict(strict=True, extra="ignore")

    client_pubkey: PublicKey
    workspace: WorkspaceSlug
    bundle: BundleName | None = None
    bundle_id: ObjectId | None = None
    template_keys: Annotated[list[TemplateKey], Field(max_length=MAX_TEMPLATE_KEYS)] = Field(
        default_factory=list
    )
    context: ClientContext = Field(default_factory=ClientContext)
    # An OIDC ID token of a CI workload (issue #16): verified, spent, never stored or echoed.
    id_token: Annotated[str | None, Field(min_length=1, max_length=MAX_ID_TOKEN)] = None
    # issue #17: the device key's signature over this request (envcat.core.device)
    device: DeviceProof | None = None

    @field_validator("template_keys")
    @classmethod
    def _bounded_keys(cls, names: list[str]) -> list[str]:
        if sum(len(name) for name in names) > MAX_TEMPLATE_KEYS_TOTAL:
            raise ValueError(
                f"the names together must be at most {MAX_TEMPLATE_KEYS_TOTAL} characters"
            )
        return names


class AccessRequestCreated(BaseModel):
    """201 to POST /requests; `poll_token` is shown here once and stored only as a hash."""

    id: str
    poll_token: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    interval: int
    expires_in: int
    # set when the request carried an ID token (issue #16): "automatic" = already approved
    workload_mode: Literal["automatic", "approval"] | None = None
    workload: str | None = None
    grant_id: str | None = None  # issue #17: delivered under this device grant


class AccessRequestView(BaseModel):
    """GET /requests/{id}/context: what the approval page shows (times are unix seconds)."""

    id: str
    status: RequestStatus
    workspace: str
    user_code: str | None  # None where the workspace requires approvers to type it
    template_keys: list[str]
    bundle: str | None
    bundle_id: str | None
    context: ClientContext
    created: float
    expires_at: float
    workload: str | None = None  # the verified workload asking (issue #16), else None
    requester: str | None = None  # the signed-in person asking (issue #17), else None
    kind: Literal["values", "login"] = "values"  # "login": `envcat login` (issue #16)
    device: str | None = None  # issue #17: the signing device's fingerprint, `ab12 cd34 …`


class ServerKey(BaseModel):
    """One delivery signing key: urlsafe-base64 raw Ed25519 public key and its fingerprint."""

    public_key: str
    fingerprint: str


class ServerKeys(BaseModel):
    """GET /server-key: the key new deliveries are signed with, and every key still signing."""

    public_key: str
    fingerprint: str
    keys: list[ServerKey]


class WaitQuery(BaseModel):
    """GET /requests/{id}/wait?timeout=N: seconds to hold the poll, 0 to 30."""

    model_config = ConfigDict(extra="ignore")

    timeout: Annotated[int, BeforeValidator(_whole_seconds)] = Field(
        default=0, ge=0, le=MAX_WAIT_SECONDS
    )


class WaitResult(BaseModel):
    """200 to a poll; `ciphertext_base64` only when ready, `message` only when failed."""

    status: RequestStatus
    ciphertext_base64: str | None = None
    message: str | None = None
    # k-of-n while pending (issue #20): approvals recorded so far of those the rule requires
    approvals: int | None = None
    approvals_required: int | None = None


class EncryptFromBundle(BaseModel):
    """POST /requests/{id}/encrypt-from-bundle: the approver's choice of keys."""

    model_config = ConfigDict(strict=True, extra="forbid")

    bundle_id: ObjectId
    include_keys: Annotated[list[KeyName], Field(min_length=1, max_length=MAX_INCLUDE_KEYS)]
    # issue #20: the approver's passkey assertion over the approval statement
    passkey: PasskeyAssertion | None = None
    # issue #17: also trust the request's device for this bundle and keys for N hours
    grant_hours: GrantHours | None = None
    # the phrase the approver typed, where the workspace requires it (no page shows it)
    phrase: TypedPhrase | None = None


class DecisionAccepted(BaseModel):
    """202 to an approval, 200 to a denial."""

    ok: Literal[True] = True
