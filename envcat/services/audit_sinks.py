"""Streaming a workspace's audit log to its syslog collector (issue #19).

Each event becomes one RFC 5424 message (facility 13 "log audit", severity
informational) with the event's chain fields in structured data and the whole
event as JSON in the message body, framed by octet counting (RFC 6587, as RFC 5425
prescribes for TLS), over TCP with TLS unless the admin turned it off.

Delivery is at least once and in order: a batch counts as accepted only once the
collector has read it to the end (after sending, the shipper half-closes and
waits for the collector to close in turn; a TLS session is shut down first). The
cursor moves past a batch only then, so a collector that is down, refuses, or
drops the connection mid-batch gets the batch again on the next round, and a
request never waits for any of this: shipping runs in a Celery task.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from sqlalchemy import func, select

from envcat.core.schemas.audit_sink import AuditSinkIn, AuditSinkOut, ExportQuery
from envcat.models import AuditEvent, AuditSink, db, utcnow
from envcat.services import audit
from envcat.services.errors import NotFound, ValidationFailed
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc
from envcat.services.transactions import transaction

# 32473 is the private enterprise number IANA reserves for documentation (RFC 5612).
SD_ID = "envcat@32473"
PRIORITY = 13 * 8 + 6  # facility "log audit", severity "informational"
BATCH = 500
MAX_BATCHES = 20  # per round; the next round carries on from the cursor
CONNECT_SECONDS = 5.0
ACCEPT_SECONDS = 15.0  # how long the collector may take to read a batch and close
LOCK_SECONDS = 300
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


class SinkRefused(Exception):
    """The collector cannot be used (a private address not allowed, or it did not accept)."""


def _out(sink: AuditSink) -> AuditSinkOut:
    head = db.session.execute(
        select(func.count()).where(
            AuditEvent.tenant_id == sink.tenant_id, AuditEvent.id > sink.cursor
        )
    ).scalar_one()
    return AuditSinkOut(
        host=sink.host,
        port=sink.port,
        tls=sink.tls,
        has_ca=bool(sink.ca_pem),
        enabled=sink.enabled,
        cursor=sink.cursor,
        shipped=sink.shipped,
        pending=head,
        last_shipped_at=as_utc(sink.last_shipped_at) if sink.last_shipped_at else None,
        last_error=sink.last_error,
        last_error_at=as_utc(sink.last_error_at) if sink.last_error_at else None,
        updated_at=as_utc(sink.updated_at),
        updated_by=sink.updated_by,
    )


def get(tenant_id: str) -> AuditSinkOut:
    """The workspace's sink; NotFound when it has none."""
    sink = db.session.get(AuditSink, tenant_id)
    if sink is None:
        raise NotFound("This workspace streams its audit log nowhere.")
    return _out(sink)


def _check_ca(pem: str) -> None:
    try:
        if not x509.load_pem_x509_certificates(pem.encode("utf-8")):
            raise ValueError
    except ValueError:
        raise ValidationFailed(
            "ca_pem must hold PEM certificates (-----BEGIN CERTIFICATE-----).",
            details=[{"field": "ca_pem", "message": "not a PEM certificate"}],
        ) from None


def configure(actor: Actor, body: AuditSinkIn) -> AuditSinkOut:
    """Create or change the sink (audited). A new destination receives the whole log."""
    if body.ca_pem:
        _check_ca(body.ca_pem)
    with transaction():
        sink = db.session.get(AuditSink, actor.tenant_id)
        if sink is None:
            sink = AuditSink(tenant_id=actor.tenant_id, cursor=0, shipped=0)
            db.session.add(sink)
        elif (sink.host, sink.port) != (body.host, body.port):
            sink.cursor, sink.shipped = 0, 0
        sink.host, sink.port, sink.tls = body.host, body.port, body.tls
        sink.ca_pem, sink.enabled = body.ca_pem or None, body.enabled
        sink.last_error, sink.last_error_at = None, None
        sink.updated_at, sink.updated_by = utcnow(), actor.user_id
        details = {"host": body.host, "port": body.port, "tls": body.tls, "enabled": body.enabled}
        actor.append("audit_sink.configured", f"sink:{body.host}:{body.port}", details)
    return _out(sink)


def remove(actor: Actor) -> None:
    """Stop streaming (audited); NotFound when there was no sink."""
    sink = db.session.get(AuditSink, actor.tenant_id)
    if sink is None:
        raise NotFound("This workspace streams its audit log nowhere.")
    target = f"sink:{sink.host}:{sink.port}"
    with transaction():
        db.session.delete(sink)
        actor.append("audit_sink.removed", target, {"shipped": sink.shipped})


def due_tenants() -> list[str]:
    """Tenants whose enabled sink is behind the head of their log."""
    newest = (
        select(func.max(AuditEvent.id))
        .where(AuditEvent.tenant_id == AuditSink.tenant_id)
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(AuditSink.tenant_id).where(AuditSink.enabled.is_(True), newest > AuditSink.cursor)
    )
    return list(rows.scalars())


# ---- the wire ----------------------------------------------------------------------------


def _sd_value(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _hostname() -> str:
    host = urlsplit(current().settings.public_url).hostname or "envcat"
    return host[:255]


def event_json(event: AuditEvent) -> dict[str, Any]:
    """The event as exported and streamed: everything the chain hashes, and the hashes."""
    return {
        "id": event.id,
        **audit.hashed_fields(event, as_utc(event.at)),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def syslog_message(event: AuditEvent, hostname: str) -> bytes:
    """One RFC 5424 message, octet-counted (`LEN SP MSG`)."""
    at = as_utc(event.at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    params = {
        "tenant": event.tenant_id,
        "id": event.id,
        "actor": event.actor,
        "target": event.target,
        "prev": event.prev_hash,
        "hash": event.hash,
    }
    data = " ".join(f'{name}="{_sd_value(value)}"' for name, value in params.items())
    body = json.dumps(event_json(event), ensure_ascii=False, separators=(",", ":"))
    msgid = event.action[:32] or "-"
    header = f"<{PRIORITY}>1 {at} {hostname} envcat - {msgid} [{SD_ID} {data}] "
    message = header.encode("utf-8") + b"\xef\xbb\xbf" + body.encode("utf-8")
    return str(len(message)).encode("ascii") + b" " + message


def _allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _connect(sink: AuditSink) -> socket.socket:
    """A connection to the collector, on an address checked before connecting (no rebinding)."""
    allow_private = current().settings.audit_sink_allow_private
    infos = socket.getaddrinfo(sink.host, sink.port, type=socket.SOCK_STREAM)
    usable = [info for info in infos if allow_private or _allowed(str(info[4][0]))]
    if not usable:
        raise SinkRefused(
            f"{sink.host} resolves only to private or reserved addresses, which this "
            "deployment does not allow (AUDIT_SINK_ALLOW_PRIVATE)"
        )
    family, kind, proto, _, address = usable[0]
    raw = socket.socket(family, kind, proto)
    raw.settimeout(CONNECT_SECONDS)
    try:
        raw.connect(address)
        if not sink.tls:
            return raw
        context = (
            ssl.create_default_context(cadata=sink.ca_pem)
            if sink.ca_pem
            else (ssl.create_default_context())
        )
        return context.wrap_socket(raw, server_hostname=sink.host)
    except BaseException:
        raw.close()
        raise


def _send_and_confirm(connection: socket.socket, payload: bytes) -> None:
    """Send, then wait until the collector has read everything and closed its side."""
    connection.settimeout(ACCEPT_SECONDS)
    connection.sendall(payload)
    if isinstance(connection, ssl.SSLSocket):
        connection = connection.unwrap()  # close_notify both ways: the peer read it all
    connection.shutdown(socket.SHUT_WR)
    while True:
        chunk = connection.recv(4096)
        if not chunk:
            return
        if len(chunk) == 4096:  # a collector that talks back is not a syslog collector
            raise SinkRefused("the collector answered with data instead of closing")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SinkRefused):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "the collector did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    return f"{type(exc).__name__}: {exc}"[:300]


@dataclass(frozen=True)
class Shipped:
    """One round's outcome for a tenant."""

    sent: int
    error: str | None


def ship(tenant_id: str) -> Shipped:
    """Send the tenant's events past the cursor, a batch per connection, in order.

    One shipper per tenant at a time (a Redis lock); a failure is recorded on the
    sink and the same events are sent again on the next round.
    """
    r = current().redis
    lock, token = f"auditsink:{tenant_id}", secrets.token_hex(8)
    if not r.set(lock, token, nx=True, ex=LOCK_SECONDS):
        return Shipped(0, None)
    try:
        return _ship(tenant_id)
    finally:
        r.eval(_RELEASE, 1, lock, token)


def _ship(tenant_id: str) -> Shipped:
    sink = db.session.get(AuditSink, tenant_id)
    if sink is None or not sink.enabled:
        return Shipped(0, None)
    hostname, sent = _hostname(), 0
    try:
        for _ in range(MAX_BATCHES):
            rows = list(
                db.session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.tenant_id == tenant_id, AuditEvent.id > sink.cursor)
                    .order_by(AuditEvent.id)
                    .limit(BATCH)
                ).scalars()
            )
            if not rows:
                break
            payload = b"".join(syslog_message(event, hostname) for event in rows)
            connection = _connect(sink)
            try:
                _send_and_confirm(connection, payload)
            finally:
                connection.close()
            sink.cursor, sink.shipped = rows[-1].id, sink.shipped + len(rows)
            sink.last_shipped_at, sink.last_error, sink.last_error_at = utcnow(), None, None
            db.session.commit()
            sent += len(rows)
            if len(rows) < BATCH:
                break
    except (OSError, ssl.SSLError, SinkRefused, ValueError) as exc:
        db.session.rollback()
        message = _describe(exc)
        sink = db.session.get(AuditSink, tenant_id)
        if sink is not None:
            sink.last_error, sink.last_error_at = message[:500], datetime.now(UTC)
            db.session.commit()
        return Shipped(sent, message)
    return Shipped(sent, None)


# ---- paged export ------------------------------------------------------------------------


def export(tenant_id: str, query: ExportQuery) -> tuple[list[dict[str, Any]], int | None]:
    """Events with an id above `after`, oldest first, and the `after` of the next page."""
    rows = list(
        db.session.execute(
            select(AuditEvent)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.id > query.after)
            .order_by(AuditEvent.id)
            .limit(query.limit + 1)
        ).scalars()
    )
    page = rows[: query.limit]
    following = page[-1].id if len(rows) > query.limit else None
    return [event_json(event) for event in page], following
