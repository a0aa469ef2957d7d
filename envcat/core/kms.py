"""At-rest encryption of key values (DESIGN §4).

AES-256-GCM under the primary key of the BUNDLE_KMS_KEY keyring, with the
tenant id and key id as associated data, so a ciphertext copied to another row
or tenant does not decrypt. Stored form: `v1.<kid>.<nonce>.<ciphertext>`,
each part base64url without padding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
NONCE_BYTES = 12


class DecryptionError(Exception):
    """A stored value does not decrypt: wrong row, unknown key, or damaged text."""


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id_of(key: bytes) -> str:
    """Return the short public identifier recorded with each ciphertext."""
    return _b64e(hashlib.sha256(b"envcat-kid\x00" + key).digest()[:6])


def _associated_data(tenant_id: str, key_id: str) -> bytes:
    return f"envcat:{VERSION}|{tenant_id}|{key_id}".encode()


@dataclass(frozen=True)
class Keyring:
    """Ordered AES keys by id; the first is the primary that encrypts."""

    primary_id: str
    keys: dict[str, AESGCM]

    @classmethod
    def from_setting(cls, value: str) -> Keyring:
        """Build from the comma-separated BUNDLE_KMS_KEY value (already validated)."""
        raw_keys = [base64.urlsafe_b64decode(e.strip()) for e in value.split(",") if e.strip()]
        keys = {key_id_of(raw): AESGCM(raw) for raw in raw_keys}
        return cls(primary_id=key_id_of(raw_keys[0]), keys=keys)

    def encrypt(self, plaintext: str, *, tenant_id: str, key_id: str) -> str:
        """Encrypt a value under the primary key, bound to its tenant and key row."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keys[self.primary_id].encrypt(
            nonce, plaintext.encode("utf-8"), _associated_data(tenant_id, key_id)
        )
        return ".".join((VERSION, self.primary_id, _b64e(nonce), _b64e(sealed)))

    def decrypt(self, stored: str, *, tenant_id: str, key_id: str) -> str:
        """Return the plaintext, or raise DecryptionError (never a wrong value)."""
        parts = stored.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise DecryptionError(f"key {key_id}: stored value is not in the {VERSION} format")
        _, kid, nonce_text, sealed_text = parts
        aes = self.keys.get(kid)
        if aes is None:
            raise DecryptionError(f"key {key_id}: encrypted under unknown keyring key {kid}")
        try:
            nonce, sealed = _b64d(nonce_text), _b64d(sealed_text)
            if len(nonce) != NONCE_BYTES:
                raise DecryptionError(f"key {key_id}: damaged nonce")
            return aes.decrypt(nonce, sealed, _associated_data(tenant_id, key_id)).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise DecryptionError(f"key {key_id}: value does not decrypt for this row") from exc

    def key_id_used(self, stored: str) -> str | None:
        """Return the keyring id a stored value records, or None if unparseable."""
        parts = stored.split(".")
        return parts[1] if len(parts) == 4 else None

    def needs_rotation(self, stored: str) -> bool:
        """True when the value is not under the primary key."""
        return self.key_id_used(stored) != self.primary_id

    def reencrypt(self, stored: str, *, tenant_id: str, key_id: str) -> str:
        """Return the value re-encrypted under the primary key (unchanged if already)."""
        if not self.needs_rotation(stored):
            return stored
        plaintext = self.decrypt(stored, tenant_id=tenant_id, key_id=key_id)
        return self.encrypt(plaintext, tenant_id=tenant_id, key_id=key_id)
