"""The signed delivery envelope (DESIGN §4, added by issue #11).

A worker does not seal bare values to the CLI any more. It seals a signed
statement of the whole decision: which request and CLI key it answers, which
workspace and bundle the values come from, who approved and when, and the
values. The CLI opens it with its one-time X25519 key and checks the Ed25519
signature against the server key it pinned, so neither a network attacker nor
a writer to Redis or the broker can hand it values: a sealed box alone proves
nothing about who sealed it.

Wire form (sealed to the CLI's public key, UTF-8 JSON; the payload's `keys` is
a list of `[name, value]` pairs in bundle order)::

    {"v": 1, "payload": base64(payload), "sigs": [{"kid": fingerprint, "sig": base64}]}

`payload` is canonical JSON (sorted keys, no spaces) of `Envelope`; each
signature covers `DOMAIN + payload`. During a key rotation the server signs
with every configured key, and the payload names them all (`server_keys`), so
a CLI pinned to the old key can verify the envelope and learn the new key from
a statement its pinned key signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

ENVELOPE_VERSION = 1
DOMAIN = b"envcat-delivery-v1\x00"
SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_SIGNATURES = 4
MAX_PASSKEY_PROOFS = 16  # a k-of-n rule asks for at most 10 approvers


class EnvelopeError(ValueError):
    """An envelope or key is malformed, does not open, or is not signed as required."""


def fingerprint(public_key: bytes) -> str:
    """Return `SHA256:<base64, no padding>` of a raw Ed25519 public key, as SSH shows keys."""
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def encode_key(raw: bytes) -> str:
    """Return a public key or seed in the wire and config form: urlsafe base64 with padding."""
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_key(text: str, size: int = PUBLIC_KEY_BYTES) -> bytes:
    """Return the raw bytes of a urlsafe-base64 key of `size` bytes, or raise EnvelopeError."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EnvelopeError("a key is not urlsafe base64") from None
    if len(raw) != size:
        raise EnvelopeError(f"a key must decode to {size} bytes")
    return raw


def generate_seed() -> str:
    """Return a fresh Ed25519 seed in the DELIVERY_SIGNING_KEY form."""
    return encode_key(bytes(SigningKey.generate()))


class SigningKeyring:
    """The delivery signing keys: the first signs as primary, the rest during a rotation."""

    def __init__(self, seeds: Sequence[bytes]) -> None:
        if not seeds:
            raise EnvelopeError("the signing keyring is empty")
        self._keys = [SigningKey(seed) for seed in seeds]

    @classmethod
    def from_setting(cls, text: str) -> SigningKeyring:
        """Parse DELIVERY_SIGNING_KEY: comma-separated urlsafe-base64 32-byte seeds."""
        entries = [entry.strip() for entry in text.split(",") if entry.strip()]
        return cls([decode_key(entry, SEED_BYTES) for entry in entries])

    @property
    def public_keys(self) -> list[bytes]:
        """Raw public keys, primary first."""
        return [bytes(key.verify_key) for key in self._keys]

    def sign(self, payload: bytes) -> list[dict[str, str]]:
        """Return one `{"kid", "sig"}` per key over DOMAIN + payload, primary first."""
        return [
            {
                "kid": fingerprint(bytes(key.verify_key)),
                "sig": base64.b64encode(key.sign(DOMAIN + payload).signature).decode("ascii"),
            }
            for key in self._keys[:MAX_SIGNATURES]
        ]


@dataclass(frozen=True)
class Envelope:
    """What the server states about one delivery; every field is checked by the CLI."""

    request_id: str
    cli_public_key: str
    workspace_id: str
    workspace_slug: str
    bundle_id: str
    bundle_name: str
    approver_id: str
    approver_email: str
    approved_at: float
    keys: Mapping[str, str]
    server_keys: Sequence[str] = field(default_factory=tuple)
    version: int = ENVELOPE_VERSION
    # issue #20: the approver's passkey proof (envcat.core.passkeys.PasskeyProof.as_dict);
    # absent from the payload when the approval carried none, so older envelopes still open
    passkey: Mapping[str, Any] | None = None
    # issue #20, k-of-n: every voter's proof, ordered by decision time, when there are
    # several (`passkey` then repeats the last, for CLIs that read one); and the number of
    # approvals the bundle's rule required, written only when more than one
    passkeys: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    approvals_required: int = 1
    # issue #17: {"reason": …} when an owner released alone past the rules (break-glass)
    break_glass: Mapping[str, str] | None = None
    # issue #17: a delivery under a device grant, {"id", "approved_by", "expires_at"}; absent
    # otherwise. The marker a CLI listing passkey approvers checks against `allow_grants`.
    grant: Mapping[str, Any] | None = None

    def to_payload(self) -> bytes:
        """Canonical JSON: the exact bytes that are signed."""
        document: dict[str, Any] = {
            "v": self.version,
            "request_id": self.request_id,
            "cli_public_key": self.cli_public_key,
            "workspace": {"id": self.workspace_id, "slug": self.workspace_slug},
            "bundle": {"id": self.bundle_id, "name": self.bundle_name},
            "approved_by": {"id": self.approver_id, "email": self.approver_email},
            "approved_at": self.approved_at,
            "keys": [[name, value] for name, value in self.keys.items()],  # bundle order
            "server_keys": list(self.server_keys),
        }
        if self.passkey is not None:
            document["passkey"] = dict(self.passkey)
        if self.passkeys:
            document["passkeys"] = [dict(proof) for proof in self.passkeys]
        if self.approvals_required != 1:
            document["approvals_required"] = self.approvals_required
        if self.break_glass is not None:
            document["break_glass"] = dict(self.break_glass)
        if self.grant is not None:
            document["grant"] = dict(self.grant)
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @classmethod
    def from_payload(cls, payload: bytes) -> Envelope:
        """Parse signed payload bytes strictly; EnvelopeError on any unexpected shape."""
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise EnvelopeError("the envelope payload is not UTF-8 JSON") from None
        if not isinstance(data, dict) or data.get("v") != ENVELOPE_VERSION:
            raise EnvelopeError("the envelope has an unknown version")
        workspace = _object(data, "workspace", ("id", "slug"))
        bundle = _object(data, "bundle", ("id", "name"))
        approver = _object(data, "approved_by", ("id", "email"))
        keys = _pairs(data.get("keys"))
        server_keys = data.get("server_keys")
        if not isinstance(server_keys, list) or not all(isinstance(k, str) for k in server_keys):
            raise EnvelopeError("the envelope's server_keys are malformed")
        passkey = data.get("passkey")
        if passkey is not None and not isinstance(passkey, dict):
            raise EnvelopeError("the envelope's passkey approval is malformed")
        passkeys = data.get("passkeys", [])
        if not (
            isinstance(passkeys, list)
            and len(passkeys) <= MAX_PASSKEY_PROOFS
            and all(isinstance(p, dict) for p in passkeys)
        ):
            raise EnvelopeError("the envelope's passkey approvals are malformed")
        required = data.get("approvals_required", 1)
        if not isinstance(required, int) or isinstance(required, bool) or required < 1:
            raise EnvelopeError("the envelope's approvals_required is not a positive integer")
        break_glass = data.get("break_glass")
        if break_glass is not None:
            break_glass = _object(data, "break_glass", ("reason",))
        grant = data.get("grant")
        if grant is not None and not isinstance(grant, dict):
            raise EnvelopeError("the envelope's grant marker is malformed")
        approved_at = data.get("approved_at")
        if not isinstance(approved_at, int | float) or isinstance(approved_at, bool):
            raise EnvelopeError("the envelope's approved_at is not a number")
        return cls(
            request_id=_text(data, "request_id"),
            cli_public_key=_text(data, "cli_public_key"),
            workspace_id=workspace["id"],
            workspace_slug=workspace["slug"],
            bundle_id=bundle["id"],
            bundle_name=bundle["name"],
            approver_id=approver["id"],
            approver_email=approver["email"],
            approved_at=float(approved_at),
            keys=keys,
            server_keys=tuple(server_keys),
            passkey=passkey,
            passkeys=tuple(passkeys),
            approvals_required=required,
            break_glass=break_glass,
            grant=grant,
        )

    def passkey_proofs(self) -> list[Mapping[str, Any]]:
        """Every passkey proof the envelope carries: the k-of-n list, else the single one."""
        if self.passkeys:
            return list(self.passkeys)
        return [self.passkey] if self.passkey is not None else []


def _pairs(value: object) -> dict[str, str]:
    """`[[name, value], …]` in bundle order; a repeated or non-text entry is refused."""
    if not isinstance(value, list):
        raise EnvelopeError("the envelope's keys are not a list of pairs")
    keys: dict[str, str] = {}
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
            and item[0] not in keys
        ):
            raise EnvelopeError("the envelope's keys are malformed")
        keys[item[0]] = item[1]
    return keys


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise EnvelopeError(f"the envelope's {name} is missing")
    return value


def _object(data: Mapping[str, Any], name: str, fields: Sequence[str]) -> dict[str, str]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise EnvelopeError(f"the envelope's {name} is missing")
    return {field_name: _text(value, field_name) for field_name in fields}


def seal_envelope(envelope: Envelope, keyring: SigningKeyring) -> bytes:
    """Sign the envelope with every key of the keyring and seal it to the CLI's public key."""
    payload = envelope.to_payload()
    document = {
        "v": ENVELOPE_VERSION,
        "payload": base64.b64encode(payload).decode("ascii"),
        "sigs": keyring.sign(payload),
    }
    plaintext = json.dumps(document, separators=(",", ":")).encode("ascii")
    try:
        recipient = PublicKey(base64.b64decode(envelope.cli_public_key, validate=True))
    except (binascii.Error, ValueError, CryptoError):
        raise EnvelopeError("the request's CLI public key is malformed") from None
    return bytes(SealedBox(recipient).encrypt(plaintext))


@dataclass(frozen=True)
class SignedEnvelope:
    """An opened envelope whose signatures are not checked yet: call `verified_by` first."""

    payload: bytes
    signatures: Mapping[str, bytes]  # key fingerprint -> signature

    def is_signed_by(self, public_key: bytes) -> bool:
        """True when `public_key` made a valid signature over this payload."""
        signature = self.signatures.get(fingerprint(public_key))
        if signature is None:
            return False
        try:
            VerifyKey(public_key).verify(DOMAIN + self.payload, signature)
        except (BadSignatureError, ValueError, CryptoError):
            return False
        return True

    def verified_by(self, public_key: bytes) -> Envelope:
        """Return the envelope if `public_key` signed it; else raise EnvelopeError."""
        if not self.is_signed_by(public_key):
            raise EnvelopeError(
                f"the delivery is not signed by the trusted server key {fingerprint(public_key)}"
            )
        return Envelope.from_payload(self.payload)

    def unverified_server_keys(self) -> list[bytes]:
        """Public keys the payload names; trust them only after `verified_by` succeeded."""
        return [decode_key(text) for text in Envelope.from_payload(self.payload).server_keys]


def open_envelope(private_key: PrivateKey, ciphertext: bytes) -> SignedEnvelope:
    """Open the sealed envelope with the CLI's key; EnvelopeError when it does not open or parse."""
    try:
        plaintext = SealedBox(private_key).decrypt(ciphertext)
    except CryptoError:
        raise EnvelopeError("the delivery does not open with this request's key") from None
    try:
        document = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise EnvelopeError("the delivery is not an EnvCat envelope") from None
    if not isinstance(document, dict) or document.get("v") != ENVELOPE_VERSION:
        raise EnvelopeError("the delivery is not a signed EnvCat envelope (unknown version)")
    sigs = document.get("sigs")
    if not isinstance(sigs, list) or not 0 < len(sigs) <= MAX_SIGNATURES:
        raise EnvelopeError("the delivery carries no signature")
    return SignedEnvelope(
        payload=_b64(document.get("payload"), "payload"),
        signatures=dict(_signature(item) for item in sigs),
    )


def _signature(item: object) -> tuple[str, bytes]:
    if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
        raise EnvelopeError("the delivery has a malformed signature")
    signature = _b64(item.get("sig"), "signature")
    if len(signature) != SIGNATURE_BYTES:
        raise EnvelopeError("the delivery has a malformed signature")
    return item["kid"], signature


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeError(f"the delivery's {name} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"the delivery's {name} is not base64") from None
