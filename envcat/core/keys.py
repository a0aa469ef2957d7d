"""Generating the server's secrets (`envcat server gen-keys`)."""

from __future__ import annotations

import base64
import secrets


def new_kms_key() -> str:
    """Return a fresh urlsafe-base64 32-byte key for BUNDLE_KMS_KEY."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def new_shared_secret() -> str:
    """Return 64 hex characters (256 bits) for BFF_SHARED_SECRET."""
    return secrets.token_hex(32)
