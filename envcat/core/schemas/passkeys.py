"""Wire models of approver passkeys and passkey-signed approvals (issue #20)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from envcat.core.approval_statement import (
    BREAK_GLASS_REASON_MAX,
    BREAK_GLASS_REASON_PATTERN,
    STATEMENT_FIELDS,
)
from envcat.core.schemas.bundles import KeyName, ObjectId
from envcat.core.usercode import TYPED_MAX

# An owner's break-glass reason (issue #17): the rule the approval statement parser
# applies too, so what the api accepts is what a passkey may sign and a CLI may read.
BreakGlassReason = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=BREAK_GLASS_REASON_MAX,
        pattern=BREAK_GLASS_REASON_PATTERN,  # one line: it is printed in terminals and notices
    ),
]
# The verification phrase as an approver typed it, where the workspace requires typing it
# (RFC 8628 §5.4); compared normalised (envcat.core.usercode.normalise).
TypedPhrase = Annotated[str, Field(max_length=TYPED_MAX)]
PasskeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# A WebAuthn PublicKeyCredential as the browser's JSON form (base64url fields); the
# webauthn library parses it, and anything it refuses is a 400.
CredentialJson = Annotated[dict[str, Any], Field(max_length=8)]


class RegistrationOptions(BaseModel):
    """POST /passkey-challenges: the `publicKey` of navigator.credentials.create."""

    options: dict[str, Any]


class PasskeyRegistration(BaseModel):
    """POST /passkeys: the name and the browser's answer to the registration options."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: PasskeyName
    credential: CredentialJson


class PasskeyRename(BaseModel):
    """PATCH /passkeys/{id}."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: PasskeyName


class PasskeyOut(BaseModel):
    """One of the caller's passkeys (no secret: the public key stays on the server)."""

    id: str
    name: str
    credential_id: str
    algorithm: str
    fingerprint: str
    created_at: datetime
    last_used_at: datetime | None


class PasskeyList(BaseModel):
    """GET /passkeys."""

    passkeys: list[PasskeyOut]


class ApproverOut(BaseModel):
    """A passkey a CLI may trust: names it by credential id, with its public key (COSE)."""

    name: str
    credential_id: str
    public_key: str  # standard base64 of the COSE_Key bytes
    algorithm: str
    fingerprint: str


class ApproverList(BaseModel):
    """GET /workspaces/{slug}/approvers (public): the members' passkeys for `envcat approvers`."""

    workspace: str
    approvers: list[ApproverOut]


class WorkspacePolicyOut(BaseModel):
    """GET/PUT /workspace/policy."""

    require_passkey: bool
    require_phrase: bool  # approvers type the phrase; no page shows it


class WorkspacePolicyIn(BaseModel):
    """PUT /workspace/policy (owner only): a field left out keeps its setting."""

    model_config = ConfigDict(strict=True, extra="forbid")

    require_passkey: bool | None = None
    require_phrase: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> WorkspacePolicyIn:
        if self.require_passkey is None and self.require_phrase is None:
            raise ValueError("Give require_passkey, require_phrase or both.")
        return self


class StatementRequest(BaseModel):
    """POST /requests/{id}/approval-statement: the bundle and keys about to be approved.

    `reason` is given for an owner's break-glass release: the statement then carries it.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    bundle_id: ObjectId
    include_keys: Annotated[list[KeyName], Field(min_length=1, max_length=1000)]
    reason: BreakGlassReason | None = None
    phrase: TypedPhrase | None = None  # where the workspace requires approvers to type it


class ApprovalChallenge(BaseModel):
    """The statement to sign and the options for navigator.credentials.get."""

    statement: dict[str, Any]
    challenge: str  # base64url of SHA-256(canonical statement)
    rp_id: str
    allow_credentials: list[str]  # base64url credential ids of the caller's passkeys
    timeout_ms: int


class PasskeyAssertion(BaseModel):
    """What the approval page posts with an approval: the statement and the assertion."""

    model_config = ConfigDict(strict=True, extra="forbid")

    # the seven fields, and `break_glass` in a break-glass release's statement
    statement: Annotated[dict[str, Any], Field(max_length=len(STATEMENT_FIELDS) + 1)]
    credential: CredentialJson
