"""The one canonical message for bff → api HMAC signatures (DESIGN §5).

Signer (bff) and verifier (api) both call `canonical_message`, so they cannot
drift apart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

HEADER_USER = "X-User-Id"
HEADER_TENANT = "X-Tenant-Id"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_NONCE = "X-Nonce"
HEADER_SIGNATURE = "X-Signature"
SIGNED_HEADERS = (HEADER_USER, HEADER_TENANT, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
CLOCK_SKEW_SECONDS = 60
NONCE_TTL_SECONDS = 120

# The identity the bff uses for its own internal calls (local accounts).
BFF_USER_ID = "bff"
NO_TENANT = "-"


def canonical_message(
    user_id: str,
    tenant_id: str,
    timestamp: str,
    nonce: str,
    method: str,
    path: str,
    query: str,
    body: bytes,
) -> bytes:
    """Return the bytes that are HMAC'd: fields joined with `|` (DESIGN §5)."""
    target = f"{path}?{query}" if query else path
    body_hash = hashlib.sha256(body).hexdigest()
    parts = (user_id, tenant_id, timestamp, nonce, method.upper(), target, body_hash)
    return "|".join(parts).encode("utf-8")


def compute_signature(secret: str, message: bytes) -> str:
    """Return lowercase hex HMAC-SHA256 of `message` keyed by the secret's UTF-8 bytes."""
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign_headers(
    secret: str,
    user_id: str,
    tenant_id: str,
    method: str,
    path: str,
    query: str,
    body: bytes,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Return the five signature headers for one call."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_urlsafe(18)
    message = canonical_message(user_id, tenant_id, timestamp, nonce, method, path, query, body)
    return {
        HEADER_USER: user_id,
        HEADER_TENANT: tenant_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: compute_signature(secret, message),
    }


def signature_matches(secret: str, message: bytes, signature: str) -> bool:
    """Compare in constant time."""
    expected = compute_signature(secret, message)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))
