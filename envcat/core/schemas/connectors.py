"""Wire models of the connector endpoints (issue #18): connections and links.

Credentials arrive in a create/update body and are never part of a reply. Validation
messages never quote the rejected input (it may be a credential).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from envcat.core.schemas.bundles import KeyName

Provider = Literal["aws", "gcp"]
Direction = Literal["pull", "push", "two-way"]
MIN_INTERVAL, MAX_INTERVAL = 60, 7 * 24 * 3600
MAX_MAPPING = 500

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
# AWS secret names: 1-512 of letters, digits and /_+=.@-; GCP ids: letters, digits, - and _.
_REMOTE_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_PREFIX = re.compile(r"[A-Za-z0-9/_+=.@-]{0,200}")


def _check(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"is not a valid {what}")
        return value

    return AfterValidator(check)


def _endpoint(value: str) -> str:
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?", value):
        raise ValueError("must be an http(s) URL without credentials, query or fragment")
    return value


Region = Annotated[str, _check(_REGION, "AWS region")]
ProjectId = Annotated[str, _check(_PROJECT, "GCP project id")]
RoleArn = Annotated[str, _check(_ROLE_ARN, "IAM role ARN")]
EndpointUrl = Annotated[str, Field(max_length=300), AfterValidator(_endpoint)]
RemoteName = Annotated[str, _check(_REMOTE_NAME, "provider secret name")]
Prefix = Annotated[str, _check(_PREFIX, "prefix")]
ConnectionName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._ -]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)


class AwsCredentials(_Body):
    """An IAM access key pair (the secret never leaves the api except to AWS)."""

    access_key_id: Annotated[str, _check(_ACCESS_KEY_ID, "access key id")]
    secret_access_key: Annotated[SecretStr, Field(min_length=16, max_length=256)]


class GcpCredentials(_Body):
    """A service-account key file, as JSON text."""

    service_account_json: Annotated[SecretStr, Field(min_length=2, max_length=16_384)]


class ConnectionCreate(_Body):
    """POST /connections: where the provider is and how to sign in."""

    name: ConnectionName
    provider: Provider
    region: Region | None = None
    endpoint_url: EndpointUrl | None = None
    role_arn: RoleArn | None = None
    project_id: ProjectId | None = None
    aws: AwsCredentials | None = None
    gcp: GcpCredentials | None = None

    @model_validator(mode="after")
    def _fits_provider(self) -> ConnectionCreate:
        if self.provider == "aws":
            if self.region is None or self.aws is None:
                raise ValueError("an aws connection needs region and aws credentials")
            if self.project_id is not None or self.gcp is not None:
                raise ValueError("project_id and gcp credentials belong to gcp connections")
        else:
            if self.project_id is None or self.gcp is None:
                raise ValueError("a gcp connection needs project_id and gcp credentials")
            if self.region or self.role_arn or self.aws:
                raise ValueError("region, role_arn and aws credentials belong to aws connections")
        return self


class ConnectionUpdate(_Body):
    """PATCH /connections/{id}: rename, move, or replace the credentials."""

    name: ConnectionName | None = None
    region: Region | None = None
    endpoint_url: EndpointUrl | None = None
    role_arn: RoleArn | None = None
    project_id: ProjectId | None = None
    aws: AwsCredentials | None = None
    gcp: GcpCredentials | None = None


class ConnectionOut(BaseModel):
    """A connection as the api shows it: never its credentials."""

    id: str
    name: str
    provider: Provider
    region: str | None
    endpoint_url: str | None
    role_arn: str | None
    project_id: str | None
    status: str
    status_message: str
    tested_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ConnectionList(BaseModel):
    connections: list[ConnectionOut]


class Queued(BaseModel):
    """A task was queued; `run_id` names it in the link status and the audit log."""

    status: Literal["queued"] = "queued"
    run_id: str | None = None


class LinkListQuery(BaseModel):
    """GET /links?bundle_id=…"""

    model_config = ConfigDict(extra="ignore")

    bundle_id: Annotated[str, Field(max_length=64)] | None = None


class LinkCreate(_Body):
    """POST /links: a bundle ↔ provider prefix, its direction, mapping and schedule."""

    connection_id: Annotated[str, Field(min_length=1, max_length=64)]
    bundle_id: Annotated[str, Field(min_length=1, max_length=64)]
    prefix: Prefix = ""
    direction: Direction
    expand_json: bool = False
    mapping: Annotated[dict[RemoteName, KeyName], Field(max_length=MAX_MAPPING)] = {}
    interval_seconds: Annotated[int, Field(ge=MIN_INTERVAL, le=MAX_INTERVAL)] = 300

    @model_validator(mode="after")
    def _json_only_pulls(self) -> LinkCreate:
        if self.expand_json and self.direction != "pull":
            raise ValueError("expand_json is for pull links only (one secret → several keys)")
        return self


class LinkUpdate(_Body):
    """PATCH /links/{id}."""

    prefix: Prefix | None = None
    direction: Direction | None = None
    expand_json: bool | None = None
    mapping: Annotated[dict[RemoteName, KeyName], Field(max_length=MAX_MAPPING)] | None = None
    interval_seconds: Annotated[int, Field(ge=MIN_INTERVAL, le=MAX_INTERVAL)] | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> LinkUpdate:
        # None means "not given"; an explicit null would blank a required column.
        if nulls := sorted(f for f in self.model_fields_set if getattr(self, f) is None):
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave a field out to keep it")
        return self


class LinkOut(BaseModel):
    """A link with its last and next sync."""

    id: str
    connection_id: str
    connection_name: str
    provider: Provider
    bundle_id: str
    bundle_name: str
    prefix: str
    direction: Direction
    expand_json: bool
    mapping: dict[str, str]
    interval_seconds: int
    next_sync_at: datetime | None
    last_sync_at: datetime | None
    last_status: str
    last_error: str
    last_summary: dict[str, Any]
    running: bool


class LinkList(BaseModel):
    links: list[LinkOut]
