"""Outbound notification channels (issue #17): SMTP email and signed webhooks.

Webhook URLs are checked when saved and again, by resolving the host, before
every delivery: https only (http only to a loopback host with
WEBHOOK_ALLOW_HTTP_LOOPBACK), and never to a private, loopback, link-local or
otherwise special address unless WEBHOOK_ALLOW_PRIVATE, so a workspace admin
cannot turn the worker into a probe of the internal network. Redirects are not
followed. Each body is signed: `X-EnvCat-Signature: v1=<hex HMAC-SHA256(secret,
timestamp + "." + body)>` with `X-EnvCat-Timestamp`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx

from envcat.core.settings import Settings
from envcat.services.errors import ValidationFailed

TIMEOUT_SECONDS = 10.0
SIGNATURE_HEADER = "X-EnvCat-Signature"
TIMESTAMP_HEADER = "X-EnvCat-Timestamp"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeDestination(Exception):
    """A webhook URL that resolves to an address we must not call."""


class WebhookRefused(Exception):
    """The receiver answered 4xx: retrying will not help."""


class WebhookRetry(Exception):
    """The receiver answered 5xx or 429: worth retrying with backoff."""


class MailRetry(Exception):
    """The mail server refused a recipient for now (4xx): worth retrying with backoff."""


def _is_special(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback_host(host: str) -> bool:
    literal = _literal(host)
    return host.lower() in LOOPBACK_NAMES if literal is None else literal.is_loopback


def check_webhook_url(url: str, settings: Settings) -> str:
    """Return the URL if it may be saved, else ValidationFailed saying why (no DNS here)."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    try:
        parts.port  # noqa: B018  # raises on a bad port
    except ValueError:
        raise ValidationFailed("The webhook URL has an invalid port.") from None
    if parts.username or parts.password or not host:
        raise ValidationFailed("The webhook URL needs a host and no user:password@ part.")
    if parts.scheme == "http":
        if not (settings.webhook_allow_http_loopback and _is_loopback_host(host)):
            raise ValidationFailed("The webhook URL must use https.")
    elif parts.scheme != "https":
        raise ValidationFailed("The webhook URL must use https.")
    literal = _literal(host)
    if literal is not None and _is_special(literal) and not settings.webhook_allow_private:
        raise ValidationFailed("The webhook URL points at a private or reserved address.")
    return url.strip()


def resolve_destination(url: str, settings: Settings) -> None:
    """Raise UnsafeDestination when any address the host resolves to is off limits."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise UnsafeDestination(f"cannot resolve the webhook host: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _is_special(address) and not settings.webhook_allow_private:
            raise UnsafeDestination("the webhook host resolves to a private or reserved address")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 over `timestamp.body` (what a receiver recomputes)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


@functools.cache
def _client() -> httpx.Client:
    # One pooled client per process; no proxies from the environment, no redirects.
    return httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False)


def post_webhook(url: str, secret: str, body: bytes, settings: Settings) -> None:
    """POST a signed JSON body; WebhookRetry on 5xx/429, WebhookRefused on other 4xx."""
    check_webhook_url(url, settings)
    resolve_destination(url, settings)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "EnvCat-Webhook/1",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }
    reply = _client().post(url, content=body, headers=headers)
    if reply.status_code == 429 or reply.status_code >= 500:
        raise WebhookRetry(f"webhook answered {reply.status_code}")
    if reply.status_code >= 300:
        raise WebhookRefused(f"webhook answered {reply.status_code}")


def send_email(settings: Settings, to: str, subject: str, text: str) -> None:
    """Send one plain-text email through SMTP_HOST (STARTTLS and login when configured)."""
    if not settings.smtp_host:
        return
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username and settings.smtp_password is not None:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        try:
            smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            if all(400 <= code < 500 for code, _ in exc.recipients.values()):
                raise MailRetry("the mail server asked to try the recipient later") from None
            raise
