"""The client address the bff vouches for on each api call, and its proof.

The api serves only the bff, so X-Forwarded-For on an api call is whatever the
caller wrote: anyone who reaches the api could rotate it to escape the per-IP
limits. The bff therefore sends the client address in `X-Envcat-Client-Ip`
with a proof (`timestamp.nonce.hmac`) keyed by a key derived from
BFF_SHARED_SECRET and bound to the method and path; the api uses the address
only when the proof verifies, the timestamp is within ±60 s and the nonce is
new, and otherwise keeps the socket's address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time

from envcat.core.signing import CLOCK_SKEW_SECONDS, NONCE_PATTERN

HEADER_CLIENT_IP = "X-Envcat-Client-Ip"
HEADER_CLIENT_PROOF = "X-Envcat-Client-Proof"
# The nonce namespace in Redis (signed calls use `nonce:`).
NONCE_KEY_PREFIX = "nonce:ip:"
NONCE_TTL_SECONDS = 2 * CLOCK_SKEW_SECONDS
_KEY_LABEL = b"envcat client-ip proof v1"
_MAX_IP_LENGTH = 64


def _key(secret: str) -> bytes:
    # A key of its own, so a proof can never pass as a call signature or the reverse.
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def _mac(secret: str, ip: str, timestamp: str, nonce: str, method: str, path: str) -> str:
    message = "|".join((ip, timestamp, nonce, method.upper(), path)).encode("utf-8")
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def is_address(value: str) -> bool:
    """True for a plain IPv4 or IPv6 address."""
    if not value or len(value) > _MAX_IP_LENGTH:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def client_headers(
    secret: str,
    ip: str,
    method: str,
    path: str,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The two headers that tell the api `ip` is the client of this call (empty if not an IP)."""
    if not is_address(ip):
        return {}
    timestamp = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_urlsafe(18)
    proof = f"{timestamp}.{nonce}.{_mac(secret, ip, timestamp, nonce, method, path)}"
    return {HEADER_CLIENT_IP: ip, HEADER_CLIENT_PROOF: proof}


def verified_client(
    secret: str,
    ip: str | None,
    proof: str | None,
    method: str,
    path: str,
    *,
    now: float | None = None,
) -> tuple[str, str] | None:
    """(ip, nonce) when the proof is genuine and fresh; the caller must still spend the nonce."""
    if not ip or not proof or not is_address(ip):
        return None
    timestamp, _, rest = proof.partition(".")
    nonce, _, mac = rest.partition(".")
    if not timestamp.isdigit() or not NONCE_PATTERN.fullmatch(nonce):
        return None
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > CLOCK_SKEW_SECONDS:
        return None
    expected = _mac(secret, ip, timestamp, nonce, method, path)
    if not hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii", "replace")):
        return None
    return ip, nonce
