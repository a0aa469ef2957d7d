"""Wire models of workload trust policies (issue #16): `/api/v1/workload-policies`.

A policy says: tokens from `issuer` for `audience` whose claims match every rule may
receive `keys` (empty = all) of one bundle, at once (`automatic`) or after a person
approves (`approval`). Validation messages never quote the rejected input.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from envcat.core.schemas.bundles import KeyName, ObjectId

MAX_RULES = 20
MAX_POLICY_KEYS = 1000
WorkloadMode = Literal["automatic", "approval"]
_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/:@-]{0,99}")


def _claim(name: str) -> str:
    if not _CLAIM.fullmatch(name):
        raise ValueError("must be a claim name: letters, digits, _ . : - (at most 64)")
    return name


def _printable(value: str) -> str:
    if not value or not value.isprintable():
        raise ValueError("must be non-empty printable text")
    return value


def _policy_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError("must be 1-100 letters, digits, spaces or . _ / : @ -")
    return name


def _issuer(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute https:// URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, fragment or credentials")
    return value  # compared with a token's `iss` exactly, as OpenID Connect requires


ClaimName = Annotated[str, AfterValidator(_claim)]
RuleValue = Annotated[str, Field(max_length=500), AfterValidator(_printable)]
PolicyName = Annotated[str, AfterValidator(_policy_name)]
Issuer = Annotated[str, Field(max_length=500), AfterValidator(_issuer)]
Audience = Annotated[str, Field(max_length=500), AfterValidator(_printable)]
PolicyKeys = Annotated[list[KeyName], Field(max_length=MAX_POLICY_KEYS)]
Rules = Annotated[list["ClaimRule"], Field(min_length=1, max_length=MAX_RULES)]
# "release": the bundle's keys (issue #16); "scan": ask which values a repository leaks (#19);
# "admin": administer the workspace like an admin (bundles as code, #16), never with another
TokenScope = Literal["release", "scan", "admin"]
TokenScopes = Annotated[list[TokenScope], Field(min_length=1, max_length=3)]


def _release_only() -> list[TokenScope]:
    return ["release"]


class ClaimRule(BaseModel):
    """One condition on a token claim: equal to `value`, or matching the glob `value`."""

    model_config = ConfigDict(strict=True, extra="forbid")

    claim: ClaimName
    op: Literal["eq", "glob"]
    value: RuleValue

    @model_validator(mode="after")
    def _not_match_all(self) -> ClaimRule:
        if self.op == "glob" and set(self.value) <= {"*", "?"}:
            raise ValueError("a glob of only * and ? matches anything; name what to trust")
        return self


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class WorkloadPolicyCreate(_Body):
    """POST /workload-policies (admin+). At least one claim rule is required."""

    name: PolicyName
    issuer: Issuer
    audience: Audience
    rules: Rules
    bundle_id: ObjectId
    keys: PolicyKeys = Field(default_factory=list)
    mode: WorkloadMode = "approval"
    scan: bool = False  # issue #19: a matching token may also ask the scan oracle


class WorkloadPolicyUpdate(_Body):
    """PATCH /workload-policies/{id}: omit a field to keep it; null is refused."""

    name: PolicyName | None = None
    issuer: Issuer | None = None
    audience: Audience | None = None
    rules: Rules | None = None
    bundle_id: ObjectId | None = None
    keys: PolicyKeys | None = None
    mode: WorkloadMode | None = None
    scan: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(str(k) for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(f"fields may be omitted but not null: {', '.join(nulls)}")
        return data


class WorkloadPolicyOut(BaseModel):
    """A trust policy as the api returns it."""

    id: str
    name: str
    issuer: str
    audience: str
    rules: list[ClaimRule]
    bundle_id: str
    bundle_name: str
    keys: list[str]
    mode: WorkloadMode
    scan: bool = False
    created_at: datetime
    updated_at: datetime


class WorkloadPolicyList(BaseModel):
    """GET /workload-policies: the tenant's policies by name."""

    items: list[WorkloadPolicyOut]


# ---- service tokens ----------------------------------------------------------------------


class ServiceTokenCreate(_Body):
    """POST /service-tokens (admin+): the token is in the reply, once.

    `release` needs a bundle; `admin` stands alone and names no bundle or keys (it is
    the workspace's, and never receives a value); `scan` may name a bundle or not.
    """

    name: PolicyName
    bundle_id: ObjectId | None = None
    keys: PolicyKeys = Field(default_factory=list)
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] = 30
    scopes: TokenScopes = Field(default_factory=_release_only)

    @model_validator(mode="after")
    def _scopes_fit(self) -> ServiceTokenCreate:
        if "admin" in self.scopes and set(self.scopes) != {"admin"}:
            raise ValueError("the admin scope cannot be combined with another scope")
        if "admin" in self.scopes and (self.bundle_id is not None or self.keys):
            raise ValueError("an admin token is for the whole workspace: name no bundle or keys")
        if "release" in self.scopes and self.bundle_id is None:
            raise ValueError("a token with the release scope needs a bundle_id")
        if self.keys and self.bundle_id is None:
            raise ValueError("keys need a bundle_id")
        return self


class ServiceTokenOut(BaseModel):
    """A service token's metadata; never the token."""

    id: str
    name: str
    prefix: str
    bundle_id: str | None
    bundle_name: str | None
    keys: list[str]
    scopes: list[str]
    created_by: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ServiceTokenCreated(ServiceTokenOut):
    """201 to POST /service-tokens: `token` is shown here only; store it as a CI secret."""

    token: str


class ServiceTokenList(BaseModel):
    """GET /service-tokens: the tenant's tokens, newest first."""

    items: list[ServiceTokenOut]
