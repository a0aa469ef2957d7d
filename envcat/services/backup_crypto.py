"""The encrypted container of `envcat server backup` (no database code here).

A file is a short header, then a libsodium secretstream (XChaCha20-Poly1305) of
length-prefixed frames:

    magic   b"ENVCATBACKUP1\\n"
    mode    1 byte: 1 = sealed to an X25519 public key, 2 = passphrase (Argon2id)
    mode 1: key id (8 bytes, SHA-256 of the public key, to name the right key) +
            the 32-byte stream key in a sealed box (80 bytes)
    mode 2: salt (16 bytes) + Argon2id opslimit and memlimit (8 bytes each, big-endian)
    stream header (24 bytes)
    frames: 4-byte big-endian length + ciphertext of at most CHUNK_BYTES plaintext

The whole header is the associated data of the first frame, so changing any byte of
it fails authentication. Each frame's tag is checked in order; the last one carries
TAG_FINAL, so a file cut at any frame boundary is refused as truncated, and frames
cannot be reordered, dropped or replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.pwhash import argon2id

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
_LENGTH = struct.Struct(">I")
_LIMITS = struct.Struct(">QQ")


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
    """Encrypts what is written into CHUNK_BYTES frames; `close()` writes the final frame."""

    def __init__(self, out: BinaryIO, target: Recipient | Passphrase) -> None:
        header, key = _header_for(target)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._out = out
        self._ad: bytes | None = header + stream_header
        self._buffer = bytearray()
        out.write(header + stream_header)

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

    def _frame(self, plaintext: bytes, tag: int) -> None:
        ciphertext = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, plaintext, self._ad, tag
        )
        self._ad = None
        self._out.write(_LENGTH.pack(len(ciphertext)) + ciphertext)


def _read_exactly(source: BinaryIO, size: int, what: str) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise BackupError(f"the backup is truncated ({what} is incomplete)")
    return data


def _open_header(source: BinaryIO, identity: Identity) -> tuple[bytes, bytes]:
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


def decrypt_chunks(source: BinaryIO, identity: Identity) -> Iterator[bytes]:
    """Yield the plaintext frames in order; BackupError on tampering, truncation, wrong key.

    Every frame is authenticated before it is yielded, but only reaching the final frame
    proves the file is whole: callers must not commit anything before the iterator ends.
    """
    header, key = _open_header(source, identity)
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
    if source.read(1):
        raise BackupError("the backup was altered (data after its final frame)")
