"""A stand-in Clerk: its host, keys and the session tokens it would mint (the real Clerk
lives outside this machine)."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

FAPI_HOST = "clerk.envcat.test"


ISSUER = f"https://{FAPI_HOST}"


PUBLISHABLE_KEY = "pk_test_" + base64.b64encode(f"{FAPI_HOST}$".encode()).decode()


PARTY = "https://envcat.example"


def pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def mint(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "user_2abc",
        "iss": ISSUER,
        "azp": PARTY,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 60,
        "sid": "sess_1",
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256")
