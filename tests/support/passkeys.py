"""Software passkeys for tests: COSE keys and WebAuthn assertions made with `cryptography`.

They stand in for an authenticator only where a test needs to control what a
real one would not do (another origin, no UV flag, a statement of its choosing);
the browser tests use Chromium's virtual authenticator instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from envcat.core.approval_statement import ApprovalStatement
from envcat.core.passkeys import FLAG_USER_PRESENT, FLAG_USER_VERIFIED, PasskeyProof, b64url


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    if value < 256:
        return bytes([major << 5 | 24, value])
    return bytes([major << 5 | 25]) + value.to_bytes(2, "big")


def _cbor_int(value: int) -> bytes:
    return _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)


def _cbor(value: object) -> bytes:
    if isinstance(value, int):
        return _cbor_int(value)
    if isinstance(value, bytes):
        return _cbor_head(2, len(value)) + value
    if isinstance(value, str):
        return _cbor_head(3, len(value.encode())) + value.encode()
    assert isinstance(value, list)  # a map, as (key, value) pairs in order
    return _cbor_head(5, len(value)) + b"".join(_cbor(k) + _cbor(v) for k, v in value)


def _cbor_map(items: list[tuple[int, int | bytes]]) -> bytes:
    return _cbor(list(items))


@dataclass
class SoftPasskey:
    """A key pair standing in for an authenticator (ES256 or EdDSA)."""

    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    credential_id: str
    counter: int = 0

    @classmethod
    def es256(cls, credential_id: str = "soft-es256") -> SoftPasskey:
        return cls(ec.generate_private_key(ec.SECP256R1()), b64url(credential_id.encode()))

    @classmethod
    def ed25519(cls, credential_id: str = "soft-ed25519") -> SoftPasskey:
        return cls(ed25519.Ed25519PrivateKey.generate(), b64url(credential_id.encode()))

    def cose(self) -> bytes:
        """The public key as a COSE_Key."""
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            raw = self.private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return _cbor_map([(1, 1), (3, -8), (-1, 6), (-2, raw)])
        numbers = self.private.public_key().public_numbers()
        x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        return _cbor_map([(1, 2), (3, -7), (-1, 1), (-2, x), (-3, y)])

    def spki(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def approver(self, name: str = "soft", *, as_spki: bool = False) -> dict[str, str]:
        """An `.envcat.toml` approvers entry for this key."""
        raw = self.spki() if as_spki else self.cose()
        return {
            "name": name,
            "credential_id": self.credential_id,
            "public_key": base64.b64encode(raw).decode(),
        }

    def registration(self, challenge: str, *, origin: str, rp_id: str) -> dict[str, object]:
        """The browser's JSON answer to registration options ("none" attestation)."""
        raw_id = base64.urlsafe_b64decode(self.credential_id + "=" * (-len(self.credential_id) % 4))
        flags = FLAG_USER_PRESENT | FLAG_USER_VERIFIED | 0x40  # AT: credential data follows
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + (0).to_bytes(4, "big")
            + bytes(16)  # AAGUID
            + len(raw_id).to_bytes(2, "big")
            + raw_id
            + self.cose()
        )
        attestation = _cbor([("fmt", "none"), ("attStmt", []), ("authData", auth_data)])
        client_data = json.dumps(
            {"type": "webauthn.create", "challenge": challenge, "origin": origin}
        ).encode()
        return {
            "id": self.credential_id,
            "rawId": self.credential_id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
            },
            "clientExtensionResults": {},
        }

    def assertion(self, statement: ApprovalStatement, **options: object) -> dict[str, object]:
        """The approval page's `passkey` field: the statement and the assertion's JSON."""
        proof = self.sign(statement, **options)  # type: ignore[arg-type]  # forwarded as given
        return {
            "statement": statement.as_dict(),
            "credential": {
                "id": proof.credential_id,
                "rawId": proof.credential_id,
                "type": "public-key",
                "response": {
                    "authenticatorData": proof.authenticator_data,
                    "clientDataJSON": proof.client_data_json,
                    "signature": proof.signature,
                },
                "clientExtensionResults": {},
            },
        }

    def sign(
        self,
        statement: ApprovalStatement,
        *,
        origin: str,
        rp_id: str,
        kind: str = "webauthn.get",
        user_verified: bool = True,
        challenge: bytes | None = None,
        email: str = "approver@example.test",
    ) -> PasskeyProof:
        """An assertion over `statement` as an authenticator would make it."""
        self.counter += 1
        flags = FLAG_USER_PRESENT | (FLAG_USER_VERIFIED if user_verified else 0)
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + self.counter.to_bytes(4, "big")
        )
        client_data = json.dumps(
            {
                "type": kind,
                "challenge": b64url(challenge or statement.challenge()),
                "origin": origin,
                "crossOrigin": False,
            }
        ).encode()
        signed = auth_data + hashlib.sha256(client_data).digest()
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            signature = self.private.sign(signed)
        else:
            signature = self.private.sign(signed, ec.ECDSA(hashes.SHA256()))
        return PasskeyProof(
            statement=statement,
            credential_id=self.credential_id,
            authenticator_data=b64url(auth_data),
            client_data_json=b64url(client_data),
            signature=b64url(signature),
            approver_email=email,
        )
