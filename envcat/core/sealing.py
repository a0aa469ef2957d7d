"""Sealed-box helpers shared by the CLI (opens) and the workers (seal).

The CLI makes a fresh X25519 keypair per request and keeps the private key in
memory only; the server can seal to the public key but never open.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

PUBLIC_KEY_BYTES = 32


class SealingError(ValueError):
    """A public key or sealed payload is malformed or does not open."""


def generate_keypair() -> PrivateKey:
    """Return a fresh X25519 private key (its `.public_key` goes to the server)."""
    return PrivateKey.generate()


def encode_public_key(private_key: PrivateKey) -> str:
    """Return the public half as standard base64 with padding, the wire form."""
    return base64.b64encode(bytes(private_key.public_key)).decode("ascii")


def decode_public_key(value: str) -> bytes:
    """Return the 32 raw bytes of a wire-form public key, or raise SealingError."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SealingError("client_pubkey is not valid base64") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SealingError("client_pubkey must decode to 32 bytes")
    return raw


def seal_values(public_key_b64: str, values: Mapping[str, str]) -> bytes:
    """Seal `{"KEY": "value"}` as UTF-8 JSON to the CLI's public key."""
    plaintext = json.dumps(dict(values), ensure_ascii=False, separators=(",", ":"))
    box = SealedBox(PublicKey(decode_public_key(public_key_b64)))
    return bytes(box.encrypt(plaintext.encode("utf-8")))


def open_values(private_key: PrivateKey, ciphertext: bytes) -> dict[str, str]:
    """Open a sealed payload with the CLI's private key and return the mapping."""
    try:
        plaintext = SealedBox(private_key).decrypt(ciphertext)
    except CryptoError as exc:
        raise SealingError("the sealed payload does not open with this key") from exc
    data = json.loads(plaintext.decode("utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise SealingError("the sealed payload is not a mapping of strings")
    return data
