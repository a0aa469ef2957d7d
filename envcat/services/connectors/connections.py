"""Connections (issue #18): a tenant's provider accounts, credentials encrypted at rest.

Credentials are keyring ciphertext bound (AES-GCM associated data) to the tenant and
`connection:<id>`, exactly like key values, so a ciphertext copied to another row or
tenant does not decrypt. They are decrypted only inside a worker, to build a client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select

from envcat.core.kms import DecryptionError
from envcat.core.schemas.connectors import (
    ConnectionCreate,
    ConnectionList,
    ConnectionOut,
    ConnectionUpdate,
)
from envcat.models import Connection, db, new_uuid, utcnow
from envcat.services import audit
from envcat.services.connectors import ratelimit
from envcat.services.connectors.aws import AwsStore
from envcat.services.connectors.gcp import GcpStore
from envcat.services.connectors.provider import ProviderError, SecretStore
from envcat.services.errors import NotFound, ValidationFailed
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.connectors")
CONFIG_FIELDS = ("region", "endpoint_url", "role_arn", "project_id")


def bound_id(connection_id: str) -> str:
    """The id a connection's credential ciphertext is bound to."""
    return f"connection:{connection_id}"


def _seal(tenant_id: str, connection_id: str, body: ConnectionCreate | ConnectionUpdate) -> str:
    if body.aws is not None:
        plain: dict[str, str] = {
            "access_key_id": body.aws.access_key_id,
            "secret_access_key": body.aws.secret_access_key.get_secret_value(),
        }
    elif body.gcp is not None:
        raw = body.gcp.service_account_json.get_secret_value()
        try:
            account = json.loads(raw)
        except ValueError:
            raise ValidationFailed("gcp.service_account_json is not JSON.") from None
        needed = {"client_email", "private_key", "token_uri"}
        if not isinstance(account, dict) or not needed <= set(account):
            raise ValidationFailed(
                "gcp.service_account_json needs client_email, private_key and token_uri."
            )
        plain = {"service_account_json": raw}
    else:  # pragma: no cover - the schemas require one of them
        raise ValidationFailed("Credentials are missing.")
    return current().keyring.encrypt(
        json.dumps(plain), tenant_id=tenant_id, key_id=bound_id(connection_id)
    )


def credentials(connection: Connection) -> dict[str, str]:
    """The decrypted credentials (worker side only); ProviderError when they do not decrypt."""
    try:
        plain = current().keyring.decrypt(
            connection.credentials, tenant_id=connection.tenant_id, key_id=bound_id(connection.id)
        )
    except DecryptionError:
        log.error("connection credentials do not decrypt", extra={"connection_id": connection.id})
        raise ProviderError("The stored credentials do not decrypt with the keyring.") from None
    value: dict[str, str] = json.loads(plain)
    return value


def out(connection: Connection) -> ConnectionOut:
    """The api's view of a connection: configuration and status, never credentials."""
    config: dict[str, Any] = connection.config or {}
    return ConnectionOut(
        id=connection.id,
        name=connection.name,
        provider="aws" if connection.provider == "aws" else "gcp",
        region=config.get("region"),
        endpoint_url=config.get("endpoint_url"),
        role_arn=config.get("role_arn"),
        project_id=config.get("project_id"),
        status=connection.status,
        status_message=connection.status_message,
        tested_at=as_utc(connection.tested_at) if connection.tested_at else None,
        created_at=as_utc(connection.created_at),
        updated_at=as_utc(connection.updated_at),
    )


def get(tenant_id: str, connection_id: str) -> Connection:
    """The tenant's connection, or NotFound (also for another tenant's id)."""
    connection = db.session.execute(
        select(Connection).where(Connection.id == connection_id, Connection.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if connection is None:
        raise NotFound("No such connection.")
    return connection


def list_connections(tenant_id: str) -> ConnectionList:
    """The tenant's connections by name."""
    rows = db.session.execute(
        select(Connection).where(Connection.tenant_id == tenant_id).order_by(Connection.name)
    ).scalars()
    return ConnectionList(connections=[out(c) for c in rows])


def create(actor: Actor, body: ConnectionCreate) -> ConnectionOut:
    """Add a connection; 409 when the name is taken."""
    message = f"A connection named {body.name} already exists."
    with transaction(message):
        connection_id = new_uuid()
        config = {f: getattr(body, f) for f in CONFIG_FIELDS if getattr(body, f) is not None}
        connection = Connection(
            id=connection_id,
            tenant_id=actor.tenant_id,
            name=body.name,
            provider=body.provider,
            config=config,
            credentials=_seal(actor.tenant_id, connection_id, body),
            status="untested",
            status_message="",
        )
        db.session.add(connection)
        actor.append(
            "connection.created",
            f"connection:{connection.id}",
            {"name": connection.name, "provider": connection.provider},
        )
    return out(connection)


PROVIDER_FIELDS = {"aws": {"region", "role_arn"}, "gcp": {"project_id"}}
REQUIRED_FIELDS = {"region", "project_id", "name"}


def _check_fields(provider: str, body: ConnectionUpdate) -> None:
    """Refuse another provider's settings, and null for a setting a connection needs."""
    for field in body.model_fields_set:
        other = PROVIDER_FIELDS["gcp" if provider == "aws" else "aws"]
        if (
            field in other
            or (field == "aws" and provider != "aws")
            or (field == "gcp" and provider != "gcp")
        ):
            raise ValidationFailed(f"{field} does not apply to a {provider} connection.")
        if field in REQUIRED_FIELDS and getattr(body, field) is None:
            raise ValidationFailed(f"{field} cannot be removed.")


def update(actor: Actor, connection_id: str, body: ConnectionUpdate) -> ConnectionOut:
    """Rename, reconfigure or replace credentials; the status returns to untested."""
    with transaction(f"A connection named {body.name} already exists."):
        connection = get(actor.tenant_id, connection_id)
        _check_fields(connection.provider, body)
        changed = sorted(f for f in body.model_fields_set if f not in ("aws", "gcp"))
        if body.name is not None:
            connection.name = body.name
        config = dict(connection.config or {})
        for field in CONFIG_FIELDS:
            if field in body.model_fields_set:
                config[field] = getattr(body, field)
        connection.config = config
        if body.aws is not None or body.gcp is not None:
            connection.credentials = _seal(actor.tenant_id, connection.id, body)
            changed.append("credentials")
        connection.status, connection.status_message = "untested", ""
        actor.append(
            "connection.updated",
            f"connection:{connection.id}",
            {"name": connection.name, "fields": changed},
        )
    return out(connection)


def request_test(actor: Actor, connection_id: str) -> Connection:
    """Audit `connection.test_requested` (committed before the caller queues the test)."""
    with transaction():
        connection = get(actor.tenant_id, connection_id)
        actor.append(
            "connection.test_requested", f"connection:{connection.id}", {"name": connection.name}
        )
    return connection


def delete(actor: Actor, connection_id: str) -> None:
    """Delete a connection and its links."""
    with transaction():
        connection = get(actor.tenant_id, connection_id)
        name = connection.name
        db.session.delete(connection)
        actor.append("connection.deleted", f"connection:{connection_id}", {"name": name})


def store_for(connection: Connection) -> SecretStore:
    """A provider client for `connection`, metered by its shared rate-limit buckets."""
    runtime = current()
    settings, config = runtime.settings, connection.config or {}
    secret = credentials(connection)
    if connection.provider == "aws":
        scope = str(config.get("region", ""))

        def aws_bucket(kind: str, rate: float) -> ratelimit.Bucket:
            return ratelimit.bucket(runtime.redis, connection.tenant_id, "aws", scope, kind, rate)

        return AwsStore(
            region=scope,
            access_key_id=secret["access_key_id"],
            secret_access_key=secret["secret_access_key"],
            endpoint_url=config.get("endpoint_url"),
            role_arn=config.get("role_arn"),
            reads=aws_bucket("read", settings.connector_aws_read_tps),
            writes=aws_bucket("write", settings.connector_aws_write_tps),
        )
    project = str(config.get("project_id", ""))

    def gcp_bucket(kind: str, per_minute: int) -> ratelimit.Bucket:
        return ratelimit.bucket(
            runtime.redis, connection.tenant_id, "gcp", project, kind, per_minute / 60
        )

    return GcpStore(
        project_id=project,
        service_account_json=secret["service_account_json"],
        endpoint_url=config.get("endpoint_url"),
        access=gcp_bucket("access", settings.connector_gcp_access_per_minute),
        reads=gcp_bucket("read", settings.connector_gcp_admin_per_minute),
        writes=gcp_bucket("write", settings.connector_gcp_admin_per_minute),
    )


def record_test(tenant_id: str, connection_id: str) -> bool:
    """Run "test connection" (worker side): store and audit the result; False if gone."""
    connection = db.session.execute(
        select(Connection).where(Connection.id == connection_id, Connection.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if connection is None:
        return False
    try:
        store_for(connection).check()
        status, message = "ok", "The provider accepted the credentials."
    except ProviderError as exc:
        status, message = "error", str(exc)
    with transaction():
        connection.status, connection.status_message = status, message
        connection.tested_at = utcnow()
        audit.append(
            tenant_id,
            "system",
            "connection.tested",
            f"connection:{connection_id}",
            details={"name": connection.name, "status": status, "message": message},
        )
    return True
