"""The run's delivery signing key and helpers that open deliveries as the CLI does.

Every test server signs with `TEST_SIGNING_SEED` (tests/conftest.py puts it in
the settings), so a test opens a delivery exactly as `envcat get` would: open
the sealed box with the request's private key, then check the server signature.
"""

from __future__ import annotations

import base64

from nacl.public import PrivateKey

from envcat.core.envelope import Envelope, SigningKeyring, generate_seed, open_envelope

TEST_SIGNING_SEED = generate_seed()
TEST_SERVER_KEY = SigningKeyring.from_setting(TEST_SIGNING_SEED).public_keys[0]


def _raw(ciphertext: bytes | str) -> bytes:
    return base64.b64decode(ciphertext) if isinstance(ciphertext, str) else ciphertext


def open_verified(private_key: PrivateKey, ciphertext: bytes | str) -> Envelope:
    """Open a delivery (raw bytes or the wire's base64) and check the test server's signature."""
    return open_envelope(private_key, _raw(ciphertext)).verified_by(TEST_SERVER_KEY)


def open_delivery(private_key: PrivateKey, ciphertext: bytes | str) -> dict[str, str]:
    """The delivered values, after the signature check."""
    return dict(open_verified(private_key, ciphertext).keys)
