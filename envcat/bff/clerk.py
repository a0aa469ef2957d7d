"""Clerk session tokens (AUTH_PROVIDER=clerk): verification and the tenant they select.

A token is accepted only if it is RS256-signed by the instance's key (a PEM in
CLERK_JWT_KEY, or the JWKS at CLERK_JWKS_URL), unexpired, already valid, from
the expected issuer and, when CLERK_AUTHORIZED_PARTIES is set, minted for one
of those origins.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import jwt

from envcat.core import signing
from envcat.core.settings import ConfigError, Settings

LEEWAY_SECONDS = 5
JWKS_CACHE_SECONDS = 300
JWKS_TIMEOUT_SECONDS = 5
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})+")


class InvalidToken(Exception):
    """The token must not be trusted; the message names the reason, never the token."""


@dataclass(frozen=True)
class ClerkClaims:
    """What a verified token says about the caller and the tenant they act in."""

    user_id: str
    tenant_id: str
    org_id: str | None = None
    org_role: str | None = None
    org_slug: str | None = None
    email: str | None = None
    name: str | None = None


def frontend_api_host(publishable_key: str | None) -> str | None:
    """Return the Frontend API host encoded in a `pk_test_…`/`pk_live_…` key, if well-formed."""
    if not publishable_key:
        return None
    prefix, _, encoded = publishable_key.partition("_")
    kind, _, encoded = encoded.partition("_")
    if prefix != "pk" or kind not in ("test", "live") or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        host = decoded.decode("ascii").removesuffix("$")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return host if _HOSTNAME.fullmatch(host) else None


def _pem(settings: Settings) -> str | None:
    if settings.clerk_jwt_key is None:
        return None
    # Environment files often carry the PEM on one line with literal \n.
    return settings.clerk_jwt_key.get_secret_value().replace("\\n", "\n")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _organisation(claims: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(id, role, slug) of the active organisation: v2 `o` claim, else v1 `org_*` claims."""
    compact = claims.get("o")
    if isinstance(compact, dict) and _text(compact.get("id")):
        # v2 tokens drop the `org:` prefix that v1 claims and webhooks carry.
        role = _text(compact.get("rol"))
        if role is not None and not role.startswith("org:"):
            role = f"org:{role}"
        return compact["id"], role, _text(compact.get("slg"))
    return _text(claims.get("org_id")), _text(claims.get("org_role")), _text(claims.get("org_slug"))


class ClerkVerifier:
    """Verify Clerk session tokens offline (PEM) or against a cached JWKS."""

    def __init__(self, settings: Settings) -> None:
        host = frontend_api_host(settings.clerk_publishable_key)
        self.issuer = settings.clerk_issuer or (f"https://{host}" if host else None)
        if self.issuer is None:
            raise ConfigError(
                "envcat: configuration error: CLERK_ISSUER: needed with AUTH_PROVIDER=clerk "
                "(or a CLERK_PUBLISHABLE_KEY to derive it from)"
            )
        self._pem = _pem(settings)
        self._jwks = (
            jwt.PyJWKClient(
                settings.clerk_jwks_url,
                cache_keys=True,
                lifespan=JWKS_CACHE_SECONDS,
                timeout=JWKS_TIMEOUT_SECONDS,
            )
            if self._pem is None and settings.clerk_jwks_url
            else None
        )
        self._parties = settings.authorized_parties

    def _key(self, token: str) -> Any:
        if self._pem is not None:
            return self._pem
        if self._jwks is None:
            raise InvalidToken("no verification key configured")
        return self._jwks.get_signing_key_from_jwt(token).key

    def verify(self, token: str) -> ClerkClaims:
        """Return the caller of a valid token; raise InvalidToken otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key(token),
                algorithms=["RS256"],
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "sub"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        if self._parties and claims.get("azp") not in self._parties:
            raise InvalidToken("azp is not an authorized party")
        return _claims(claims)


def _claims(claims: dict[str, Any]) -> ClerkClaims:
    user_id = _text(claims.get("sub"))
    if user_id is None or not signing.ID_PATTERN.fullmatch(user_id):
        raise InvalidToken("sub is missing or malformed")
    org_id, org_role, org_slug = _organisation(claims)
    if org_id is not None and not signing.ID_PATTERN.fullmatch(org_id):
        raise InvalidToken("organisation id is malformed")
    return ClerkClaims(
        user_id=user_id,
        tenant_id=org_id or user_id,
        org_id=org_id,
        org_role=org_role,
        org_slug=org_slug,
        email=_text(claims.get("email")),
        name=_text(claims.get("name")),
    )
