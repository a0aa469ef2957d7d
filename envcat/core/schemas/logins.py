"""Wire models of signed-in terminals (issues #16, #17): `envcat login`, whoami, logout.

A login is an access request of its own kind: the CLI's X25519 key and a workspace;
an approver signs the terminal in, and the new user token is sealed to that key.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from envcat.core.schemas.passkeys import TypedPhrase
from envcat.core.schemas.requests import ClientContext, PublicKey, WorkspaceSlug

USER_TOKEN_SCHEME = "ecu"  # noqa: S105  # a token's prefix, not a secret
USER_TOKEN_BEARER = f"Bearer {USER_TOKEN_SCHEME}_"


class LoginCreate(BaseModel):
    """POST /logins: sign this terminal in to a workspace (sealed to `client_pubkey`)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    client_pubkey: PublicKey
    workspace: WorkspaceSlug
    context: ClientContext = Field(default_factory=ClientContext)


class SignInApproval(BaseModel):
    """POST /requests/{id}/sign-in (optional body): the phrase the approver typed, where the
    workspace requires approvers to type it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    phrase: TypedPhrase | None = None


class WhoAmI(BaseModel):
    """GET /logins/whoami: whose terminal token this is, in which workspace, until when."""

    user_id: str
    email: str
    tenant_id: str
    workspace: str
    role: str
    token_id: str
    expires_at: datetime


class UserTokenOut(BaseModel):
    """A signed-in terminal as the account page lists it (never the token)."""

    id: str
    name: str
    prefix: str
    workspace: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class UserTokenList(BaseModel):
    """GET /me/user-tokens: the caller's terminals in this workspace, newest first."""

    items: list[UserTokenOut]
