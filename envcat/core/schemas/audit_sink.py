"""Wire models of audit streaming (issue #19): the workspace's syslog sink and the JSONL export."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A DNS name (RFC 1123 labels) or an IPv4/IPv6 literal; resolved and checked when connecting.
_HOST = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$|^[0-9A-Fa-f:.]{2,45}$"
)
CA_PEM_MAX = 64 * 1024
EXPORT_MAX = 5000


class AuditSinkIn(BaseModel):
    """PUT /audit/sink: where to stream the log (RFC 5424 over TCP, TLS unless told otherwise)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 6514
    tls: bool = True
    ca_pem: Annotated[str, Field(max_length=CA_PEM_MAX)] | None = None
    enabled: bool = True

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not _HOST.fullmatch(value):
            raise ValueError("must be a host name or an IP address")
        return value.rstrip(".").lower()


class AuditSinkOut(BaseModel):
    """The sink and how far the log has been shipped; `pending` events wait to be sent."""

    host: str
    port: int
    tls: bool
    has_ca: bool
    enabled: bool
    cursor: int
    shipped: int
    pending: int
    last_shipped_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    updated_at: datetime
    updated_by: str | None


class ExportQuery(BaseModel):
    """GET /audit/export?after=&limit=: events with an id above `after`, oldest first."""

    model_config = ConfigDict(extra="ignore")

    after: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=EXPORT_MAX)] = 1000
