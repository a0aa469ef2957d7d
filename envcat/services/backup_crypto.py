"""The encrypted container of `envcat server backup` (no database code here).

A file is a short header, then a libsodium secretstream (XChaCha20-Poly1305) of
length-prefixed frames:

    magic   b"ENVCATBACKUP1\\n"
    mode    1 byte: 1 = sealed to an X25519 public key, 2 = passphrase (Argon2id)
    mode 1: key id (8 bytes, SHA-256 of the public key, to name the right key) +
            the 32-byte stream key in a sealed box (80 bytes)
    mode 2: salt (16 bytes) + Argon2id opslimit and memlimit (8 bytes each, big-endian)
    signed  1 byte: 0, or 1 followed by the signer's Ed25519 public key (32 bytes)
    stream header (24 bytes)
    frames: 4-byte big-endian length + ciphertext of at most CHUNK_BYTES plaintext
    signature (signed files only): Ed25519 over SHA-512 of every byte before it (64 bytes)

The whole header is the associated data of the first frame, so changing any byte of
it fails authentication. Each frame's tag is checked in order; the last one carries
TAG_FINAL, so a file cut at any frame boundary is refused as truncated, and frames
cannot be reordered, dropped or replayed.

Encryption to a public key proves nothing about who wrote the file: anyone who knows
BACKUP_PUBLIC_KEY can make one. A signed backup (BACKUP_SIGNING_KEY on the host that
writes backups) lets restore require the signer it is told (`--signed-by`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import nacl.bindings as sodium
import nacl.exceptions
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.pwhash import argon2id
from nacl.signing import SigningKey, VerifyKey

MAGIC = b"ENVCATBACKUP1\n"
MODE_RECIPIENT = 1
MODE_PASSPHRASE = 2
CHUNK_BYTES = 64 * 1024
KEY_ID_BYTES = 8
STREAM_KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
SEALED_KEY_BYTES = STREAM_KEY_BYTES + sodium.crypto_box_SEALBYTES
STREAM_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
FRAME_OVERHEAD = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
# Argon2id cost: MODERATE by default; a file asking for more than SENSITIVE is refused,
# so a forged header cannot make restore allocate gigabytes.
OPSLIMIT = argon2id.OPSLIMIT_MODERATE
MEMLIMIT = argon2id.MEMLIMIT_MODERATE
MAX_OPSLIMIT = argon2id.OPSLIMIT_SENSITIVE
MAX_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE
SIGNATURE_BYTES = 64
SIGNATURE_CONTEXT = b"envcat-backup-signature-v1\x00"
_LENGTH = struct.Struct(">I")
_LIMITS = struct.Struct(">QQ")


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class BackupError(Exception):
    """A backup cannot be written or read; the message is safe to print."""


@dataclass(frozen=True)
class KdfCost:
    """Argon2id work factors for passphrase-encrypted backups."""

    opslimit: int = OPSLIMIT
    memlimit: int = MEMLIMIT


def encode_key(raw: bytes) -> str:
    """Urlsafe base64 text of a 32-byte key (the form settings and key files hold)."""
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_key(text: str, what: str) -> bytes:
    """The 32 raw bytes of a urlsafe-base64 key; BackupError naming `what` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise BackupError(f"{what} is not urlsafe base64") from None
    if len(raw) != PublicKey.SIZE:
        raise BackupError(f"{what} must decode to 32 bytes")
    return raw


def generate_keypair() -> tuple[str, str]:
    """A fresh X25519 backup key pair as (private, public) urlsafe-base64 text."""
    private = PrivateKey.generate()
    return encode_key(bytes(private)), encode_key(bytes(private.public_key))


def public_key_of(private_text: str) -> str:
    """The public half of a urlsafe-base64 X25519 private key."""
    private = PrivateKey(decode_key(private_text, "the backup private key"))
    return encode_key(bytes(private.public_key))


def generate_signing_key() -> tuple[str, str]:
    """A fresh Ed25519 signing key as (seed, public key) urlsafe-base64 text."""
    signing = SigningKey.generate()
    return encode_key(bytes(signing)), encode_key(bytes(signing.verify_key))


def signing_public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a signing seed."""
    return bytes(SigningKey(seed).verify_key)


def key_id(public_key: bytes) -> str:
    """A short, printable name of a backup public key (what a file says it was sealed to)."""
    return hashlib.sha256(public_key).hexdigest()[: KEY_ID_BYTES * 2]


@dataclass(frozen=True)
class Recipient:
    """Encrypt to this X25519 public key (the private key stays off the server)."""

    public_key: bytes


@dataclass(frozen=True)
class Passphrase:
    """Encrypt under a key derived from this passphrase with Argon2id."""

    text: str
    cost: KdfCost = KdfCost()


@dataclass(frozen=True)
class Identity:
    """What opens a backup: the X25519 private key, or the passphrase (either may be None)."""

    private_key: bytes | None = None
    passphrase: str | None = None
    signed_by: bytes | None = None
    """When set, the file must carry a valid signature by this Ed25519 public key."""


class _Hashing:
    """A file seen through SHA-512: every byte read or written is hashed."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.digest = hashlib.sha512()

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.stream.write(data)

    def signed_message(self) -> bytes:
        return SIGNATURE_CONTEXT + self.digest.digest()


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    if not passphrase:
        raise BackupError("the passphrase is empty")
    return bytes(
        argon2id.kdf(
            STREAM_KEY_BYTES, passphrase.encode("utf-8"), salt, opslimit=opslimit, memlimit=memlimit
        )
    )


def _header_for(target: Recipient | Passphrase) -> tuple[bytes, bytes]:
    """(header bytes up to the stream header, stream key)."""
    if isinstance(target, Recipient):
        stream_key = os.urandom(STREAM_KEY_BYTES)
        sealed = SealedBox(PublicKey(target.public_key)).encrypt(stream_key)
        ident = bytes.fromhex(key_id(target.public_key))
        return MAGIC + bytes([MODE_RECIPIENT]) + ident + bytes(sealed), stream_key
    salt = os.urandom(argon2id.SALTBYTES)
    cost = target.cost
    stream_key = _derive(target.text, salt, cost.opslimit, cost.memlimit)
    limits = _LIMITS.pack(cost.opslimit, cost.memlimit)
    return MAGIC + bytes([MODE_PASSPHRASE]) + salt + limits, stream_key


class EncryptedWriter:
    """Encrypts what is written into CHUNK_BYTES frames; `close()` writes the final frame
    (and the signature, when given a signing seed)."""

    def __init__(
        self, out: BinaryIO, target: Recipient | Passphrase, signer: bytes | None = None
    ) -> None:
        header, key = _header_for(target)
        self._signer = SigningKey(signer) if signer is not None else None
        if self._signer is None:
            header += bytes([0])
        else:
            header += bytes([1]) + bytes(self._signer.verify_key)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._out = _Hashing(out)
        self._ad: bytes | None = header + stream_header
        self._buffer = bytearray()
        self._out.write(header + stream_header)

    def write(self, data: bytes) -> None:
        """Buffer `data`; full chunks are encrypted and written at once."""
        self._buffer += data
        while len(self._buffer) > CHUNK_BYTES:
            self._frame(bytes(self._buffer[:CHUNK_BYTES]), TAG_MESSAGE)
            del self._buffer[:CHUNK_BYTES]

    def close(self) -> None:
        """Encrypt what is buffered as the final frame (a file without it is truncated)."""
        self._frame(bytes(self._buffer), TAG_FINAL)
        self._buffer.clear()
        if self._signer is not None:
            self._out.stream.write(self._signer.sign(self._out.signed_message()).signature)

    def _frame(self, plaintext: bytes, tag: int) -> None:
        ciphertext = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, plaintext, self._ad, tag
        )
        self._ad = None
        self._out.write(_LENGTH.pack(len(ciphertext)) + ciphertext)


def _read_exactly(source: _Reader, size: int, what: str) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise BackupError(f"the backup is truncated ({what} is incomplete)")
    return data


def _read_signer(source: _Hashing, identity: Identity) -> tuple[bytes, bytes | None]:
    """(the signed-flag bytes, the signer's public key or None); refuses an unexpected signer."""
    flag = _read_exactly(source, 1, "the header")
    signer = _read_exactly(source, 32, "the header") if flag == b"\x01" else None
    if flag not in (b"\x00", b"\x01"):
        raise BackupError("the backup header is damaged (unknown signature flag)")
    expected = identity.signed_by
    if expected is not None and signer is None:
        raise BackupError("the backup is not signed, and a signature was required (--signed-by)")
    if expected is not None and signer != expected:
        assert signer is not None  # noqa: S101  # the branch above
        raise BackupError(
            f"the backup is signed by key {key_id(signer)}, not by {key_id(expected)}"
        )
    return flag + (signer or b""), signer


def _open_header(source: _Hashing, identity: Identity) -> tuple[bytes, bytes]:
    """(header bytes read, stream key) — or BackupError: not a backup, wrong key."""
    if source.read(len(MAGIC)) != MAGIC:
        raise BackupError("not an EnvCat backup (unknown file header)")
    mode = _read_exactly(source, 1, "the header")[0]
    if mode == MODE_RECIPIENT:
        ident = _read_exactly(source, KEY_ID_BYTES, "the header")
        sealed = _read_exactly(source, SEALED_KEY_BYTES, "the header")
        if identity.private_key is None:
            raise BackupError(
                f"this backup is sealed to backup key {ident.hex()}: pass its private key "
                "(--identity FILE)"
            )
        private = PrivateKey(identity.private_key)
        try:
            key = SealedBox(private).decrypt(sealed)
        except nacl.exceptions.CryptoError:
            mine = key_id(bytes(private.public_key))
            raise BackupError(
                f"wrong key: this backup is sealed to backup key {ident.hex()}, not {mine}"
            ) from None
        return MAGIC + bytes([mode]) + ident + sealed, key
    if mode == MODE_PASSPHRASE:
        salt = _read_exactly(source, argon2id.SALTBYTES, "the header")
        limits = _read_exactly(source, _LIMITS.size, "the header")
        opslimit, memlimit = _LIMITS.unpack(limits)
        if identity.passphrase is None:
            raise BackupError("this backup is encrypted with a passphrase: pass --passphrase")
        if opslimit > MAX_OPSLIMIT or memlimit > MAX_MEMLIMIT:
            raise BackupError("the backup header asks for an unreasonable Argon2id cost")
        key = _derive(identity.passphrase, salt, opslimit, memlimit)
        return MAGIC + bytes([mode]) + salt + limits, key
    raise BackupError(f"unknown backup encryption mode {mode}")


def decrypt_chunks(file: BinaryIO, identity: Identity) -> Iterator[bytes]:
    """Yield the plaintext frames in order; BackupError on tampering, truncation, wrong key,
    a missing or wrong signature.

    Every frame is authenticated before it is yielded, but only reaching the end proves the
    file is whole and its signature good: callers must not commit anything before then.
    """
    source = _Hashing(file)
    header, key = _open_header(source, identity)
    signed, signer = _read_signer(source, identity)
    header += signed
    stream_header = _read_exactly(source, STREAM_HEADER_BYTES, "the header")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, stream_header, key)
    except nacl.exceptions.CryptoError:
        raise BackupError("the backup header is damaged") from None
    ad: bytes | None = header + stream_header
    while True:
        prefix = source.read(_LENGTH.size)
        if not prefix:
            raise BackupError("the backup is truncated (its final frame is missing)")
        if len(prefix) != _LENGTH.size:
            raise BackupError("the backup is truncated (a frame length is incomplete)")
        (length,) = _LENGTH.unpack(prefix)
        if not FRAME_OVERHEAD <= length <= CHUNK_BYTES + FRAME_OVERHEAD:
            raise BackupError("the backup is damaged (a frame has an impossible length)")
        ciphertext = _read_exactly(source, length, "a frame")
        try:
            plaintext, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                state, ciphertext, ad
            )
        except nacl.exceptions.CryptoError:
            if ad is not None and header[len(MAGIC)] == MODE_PASSPHRASE:
                raise BackupError("wrong passphrase, or the backup was altered") from None
            raise BackupError("the backup was altered (a frame fails authentication)") from None
        ad = None
        yield plaintext
        if tag == TAG_FINAL:
            break
    if signer is not None:
        _check_signature(source, signer)
    if file.read(1):
        raise BackupError("the backup was altered (data after its final frame)")


def _check_signature(source: _Hashing, signer: bytes) -> None:
    message = source.signed_message()
    signature = source.stream.read(SIGNATURE_BYTES)
    if len(signature) != SIGNATURE_BYTES:
        raise BackupError("the backup is truncated (its signature is missing)")
    try:
        VerifyKey(signer).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        raise BackupError("the backup's signature does not verify") from None


def backup_signer(path: Path) -> bytes | None:
    """The signer's public key a backup's header names (checked only when it is read)."""
    sizes = {MODE_RECIPIENT: KEY_ID_BYTES + SEALED_KEY_BYTES, MODE_PASSPHRASE: 16 + _LIMITS.size}
    with path.open("rb") as file:
        if file.read(len(MAGIC)) != MAGIC:
            raise BackupError("not an EnvCat backup (unknown file header)")
        mode = file.read(1)
        if not mode or mode[0] not in sizes:
            raise BackupError("not an EnvCat backup (unknown encryption mode)")
        file.read(sizes[mode[0]])
        signer = file.read(33)
        return signer[1:] if len(signer) == 33 and signer[0] == 1 else None
