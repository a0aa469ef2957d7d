"""Device keys (issue #17): who signs a request, so a grant can trust one terminal user.

The CLI keeps one Ed25519 key per terminal user. Every request it makes carries the
public key and a signature over the request's own fields (its one-time X25519 key,
workspace, bundle, keys asked for) and a timestamp, made with `request_message` on
both sides so signer and verifier cannot drift apart. A signature copied from one
request proves nothing for another: the X25519 key differs, and the api spends each
signature once within its time window.

Standard library and PyNaCl only: the CLI imports this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

DOMAIN = b"envcat-device-v1\x00"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_SKEW_SECONDS = 60  # a signature older or newer than this is refused
FINGERPRINT_BYTES = 16  # 128 bits of SHA-256: shown as eight groups of four hex digits


class DeviceKeyError(ValueError):
    """A device key or signature is malformed or does not verify."""


def fingerprint(public_key: bytes) -> str:
    """Return the human-checkable form `ab12 cd34 …` (128 bits of SHA-256 of the raw key)."""
    digest = hashlib.sha256(public_key).hexdigest()[: FINGERPRINT_BYTES * 2]
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def request_message(
    *,
    client_pubkey: str,
    workspace: str,
    bundle: str | None,
    bundle_id: str | None,
    template_keys: Sequence[str],
    timestamp: int,
) -> bytes:
    """The exact bytes a device signs for one request (canonical JSON after a domain tag)."""
    fields = {
        "client_pubkey": client_pubkey,
        "workspace": workspace,
        "bundle": bundle,
        "bundle_id": bundle_id,
        "template_keys": list(template_keys),
        "ts": timestamp,
    }
    return DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def encode(raw: bytes) -> str:
    """Standard base64 with padding: the wire form of keys and signatures."""
    return base64.b64encode(raw).decode("ascii")


def decode(text: str, size: int) -> bytes:
    """Raw bytes of a standard-base64 value of exactly `size` bytes, else DeviceKeyError."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise DeviceKeyError("must be standard base64") from None
    if len(raw) != size:
        raise DeviceKeyError(f"must decode to {size} bytes")
    return raw


def sign(key: SigningKey, message: bytes) -> str:
    """The device's signature over `message`, base64."""
    return encode(key.sign(message).signature)


def verify(public_key: str, signature: str, message: bytes) -> bytes:
    """Return the raw public key when `signature` verifies over `message`, else DeviceKeyError."""
    raw = decode(public_key, PUBLIC_KEY_BYTES)
    try:
        VerifyKey(raw).verify(message, decode(signature, SIGNATURE_BYTES))
    except BadSignatureError:
        raise DeviceKeyError("the device signature does not verify") from None
    return raw
