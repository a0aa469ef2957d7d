"""Passkey public keys and WebAuthn assertions, checked without the server (issue #20).

The CLI verifies that a named human approved its request with a key that never
left their authenticator: the assertion travels in the signed envelope, and
this module checks it against an approver key from `.envcat.toml` with
`cryptography` alone (no WebAuthn library, no server code). The server uses the
same key parsing and fingerprint, so `envcat approvers list` and the account
page show the same fingerprint.

Keys are ES256 (COSE alg -7, P-256) or EdDSA (alg -8, Ed25519), given as COSE_Key
bytes or as a DER SubjectPublicKeyInfo, in base64 (standard or urlsafe). The
fingerprint is `SHA256:` + unpadded base64 of the SHA-256 of the SPKI DER.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from envcat.core.approval_statement import ApprovalStatement, StatementError

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

FLAG_USER_PRESENT = 0x01
FLAG_USER_VERIFIED = 0x04
AUTH_DATA_MIN_BYTES = 37  # rpIdHash (32) + flags (1) + signCount (4)
MAX_FIELD_BYTES = 4096
# The two DER SubjectPublicKeyInfo shapes accepted, written by hand: the serialization
# module would add tens of milliseconds to every `envcat get` that checks a passkey.
_SPKI_P256 = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")


class PasskeyError(ValueError):
    """A key or an assertion is malformed or does not verify; the message says which check."""


def b64decode(text: str) -> bytes:
    """Decode standard or urlsafe base64, padded or not; PasskeyError when it is not base64."""
    if not isinstance(text, str) or len(text) > MAX_FIELD_BYTES * 2:
        raise PasskeyError("not base64 text")
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise PasskeyError("not base64 text") from None


def b64url(raw: bytes) -> str:
    """Unpadded urlsafe base64, as WebAuthn writes binary fields."""
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


# A minimal CBOR reader: enough for a COSE_Key map (small ints, byte and text strings).
def _cbor_item(data: bytes, at: int, depth: int = 0) -> tuple[Any, int]:
    if at >= len(data) or depth > 4:
        raise PasskeyError("the COSE key is truncated or nested too deeply")
    major, info = data[at] >> 5, data[at] & 0x1F
    at += 1
    if info < 24:
        value = info
    elif info in (24, 25, 26, 27):
        size = 1 << (info - 24)
        if at + size > len(data):
            raise PasskeyError("the COSE key is truncated")
        value = int.from_bytes(data[at : at + size], "big")
        at += size
    else:
        raise PasskeyError("the COSE key uses CBOR this reader does not accept")
    if major == 0:
        return value, at
    if major == 1:
        return -1 - value, at
    if major in (2, 3):
        if at + value > len(data):
            raise PasskeyError("the COSE key is truncated")
        raw = data[at : at + value]
        return (raw if major == 2 else raw.decode("utf-8", "strict")), at + value
    if major == 5:
        items: dict[Any, Any] = {}
        for _ in range(value):
            key, at = _cbor_item(data, at, depth + 1)
            items[key], at = _cbor_item(data, at, depth + 1)
        return items, at
    raise PasskeyError("the COSE key uses CBOR this reader does not accept")


def _from_cose(raw: bytes) -> tuple[PublicKey, int]:
    cose, end = _cbor_item(raw, 0)
    if not isinstance(cose, dict) or end != len(raw):
        raise PasskeyError("not a COSE_Key")
    kty, alg, crv = cose.get(1), cose.get(3), cose.get(-1)
    x = cose.get(-2)
    if kty == 2 and alg == -7 and crv == 1:  # EC2, ES256, P-256
        y = cose.get(-3)
        if not (isinstance(x, bytes) and isinstance(y, bytes) and len(x) == len(y) == 32):
            raise PasskeyError("the COSE EC2 key's coordinates are malformed")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
        except ValueError:
            raise PasskeyError("the COSE EC2 key is not a point on P-256") from None
        return key, -7
    if kty == 1 and alg == -8 and crv == 6:  # OKP, EdDSA, Ed25519
        if not (isinstance(x, bytes) and len(x) == 32):
            raise PasskeyError("the COSE OKP key is malformed")
        return ed25519.Ed25519PublicKey.from_public_bytes(x), -8
    raise PasskeyError("only ES256 (P-256) and EdDSA (Ed25519) passkeys are accepted")


def load_public_key(raw: bytes) -> PublicKey:
    """Parse COSE_Key bytes or a DER SubjectPublicKeyInfo (P-256 or Ed25519 only)."""
    if raw[:1] == b"\x30":  # a DER SEQUENCE: SubjectPublicKeyInfo
        if raw.startswith(_SPKI_ED25519) and len(raw) == len(_SPKI_ED25519) + 32:
            return ed25519.Ed25519PublicKey.from_public_bytes(raw[len(_SPKI_ED25519) :])
        if raw.startswith(_SPKI_P256) and len(raw) == len(_SPKI_P256) + 65:
            try:
                point = raw[len(_SPKI_P256) :]
                return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            except ValueError:
                raise PasskeyError("the SPKI key is not a point on P-256") from None
        raise PasskeyError("only P-256 (uncompressed) and Ed25519 SPKI keys are accepted")
    return _from_cose(raw)[0]


def spki(key: PublicKey) -> bytes:
    """The key's DER SubjectPublicKeyInfo."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return _SPKI_ED25519 + key.public_bytes_raw()
    numbers = key.public_numbers()
    return _SPKI_P256 + b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def key_fingerprint(key: PublicKey) -> str:
    """`SHA256:` + unpadded base64 of the SHA-256 of the SPKI DER (as SSH shows keys)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(spki(key)).digest()).decode().rstrip("=")


def algorithm_name(key: PublicKey) -> str:
    """ES256 or EdDSA."""
    return "EdDSA" if isinstance(key, ed25519.Ed25519PublicKey) else "ES256"


@dataclass(frozen=True)
class PasskeyProof:
    """A passkey assertion over an approval statement, as the signed envelope carries it."""

    statement: ApprovalStatement
    credential_id: str  # base64url, as WebAuthn names credentials
    authenticator_data: str  # base64url
    client_data_json: str  # base64url
    signature: str  # base64url
    approver_email: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON object the envelope and the approval record hold."""
        return {
            "statement": self.statement.as_dict(),
            "credential_id": self.credential_id,
            "authenticator_data": self.authenticator_data,
            "client_data_json": self.client_data_json,
            "signature": self.signature,
            "approver_email": self.approver_email,
        }

    @classmethod
    def from_dict(cls, data: object) -> PasskeyProof:
        """Parse strictly; PasskeyError on any other shape."""
        fields = (
            "credential_id",
            "authenticator_data",
            "client_data_json",
            "signature",
            "approver_email",
        )
        if not isinstance(data, Mapping) or set(data) != {"statement", *fields}:
            raise PasskeyError("the passkey approval is malformed")
        if not all(isinstance(data[name], str) for name in fields):
            raise PasskeyError("the passkey approval is malformed")
        statement = data["statement"]
        if not isinstance(statement, Mapping):
            raise PasskeyError("the passkey approval has no statement")
        try:
            parsed = ApprovalStatement.from_dict(statement)
        except StatementError as exc:
            raise PasskeyError(str(exc)) from None
        return cls(parsed, *(str(data[name]) for name in fields))


def _client_data(raw: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PasskeyError("its clientDataJSON is not JSON") from None
    if not isinstance(data, dict):
        raise PasskeyError("its clientDataJSON is not a JSON object")
    return data


def verify_assertion(
    proof: PasskeyProof,
    key: PublicKey,
    *,
    challenge: bytes,
    origin: str,
    rp_id: str,
) -> None:
    """Check a WebAuthn assertion as a relying party would; PasskeyError naming the failed check.

    Checks: clientDataJSON type `webauthn.get`, its challenge equals `challenge`,
    its origin equals `origin`, the authenticator data's RP id hash is SHA-256
    of `rp_id`, user present and user verified flags set, and the signature over
    authenticatorData || SHA-256(clientDataJSON) under `key`.
    """
    auth_data = b64decode(proof.authenticator_data)
    client_raw = b64decode(proof.client_data_json)
    signature = b64decode(proof.signature)
    client = _client_data(client_raw)
    if client.get("type") != "webauthn.get":
        raise PasskeyError("its clientDataJSON is not of type webauthn.get")
    signed_challenge = client.get("challenge")
    if not isinstance(signed_challenge, str) or not hmac.compare_digest(
        signed_challenge.rstrip("="), b64url(challenge)
    ):
        raise PasskeyError("the signed statement does not match this delivery (challenge mismatch)")
    if client.get("origin") != origin:
        raise PasskeyError(
            f"the passkey signed for origin {str(client.get('origin'))[:80]!r}, not {origin!r}"
        )
    if len(auth_data) < AUTH_DATA_MIN_BYTES:
        raise PasskeyError("its authenticator data is truncated")
    if auth_data[:32] != hashlib.sha256(rp_id.encode("utf-8")).digest():
        raise PasskeyError(f"the passkey is scoped to another site than {rp_id!r}")
    flags = auth_data[32]
    if not flags & FLAG_USER_PRESENT or not flags & FLAG_USER_VERIFIED:
        raise PasskeyError("the authenticator did not verify the user (no UV flag)")
    signed = auth_data + hashlib.sha256(client_raw).digest()
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, signed)
        else:
            key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise PasskeyError("the passkey signature does not verify under that key") from None
