"""Verify OIDC ID tokens of CI workloads against their issuer's keys (issue #16).

The issuer's discovery document (`{iss}/.well-known/openid-configuration`) names its
`jwks_uri`; the keys are cached per process and fetched again only when they are older
than OIDC_JWKS_TTL, or when a token names an unknown `kid` (a key rotation) and the
last fetch is older than OIDC_JWKS_COOLDOWN, so forged `kid`s cannot make us hammer
the issuer. A fetch that fails answers 503 `issuer_unavailable` with Retry-After.

Only RS256 and ES256 are accepted, never `none` or HS*: an HMAC "signed" with the
issuer's public key would otherwise verify. `iss`, `aud`, `exp`, `nbf` and `iat` are
checked with OIDC_LEEWAY, and each token is used once: a Redis SET NX on a hash of its
`jti` (or of the whole token) lives as long as the token does.

The caller names the issuers it trusts (those of the workspace's policies): no other
URL is ever fetched, whatever a token says.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from jwt.exceptions import InvalidKeyError, PyJWKError, PyJWTError

from envcat.core.settings import Settings
from envcat.services.errors import InvalidIdToken, IssuerUnavailable
from envcat.services.runtime import current

ALGORITHMS = ("RS256", "ES256")
FETCH_TIMEOUT = httpx.Timeout(5.0)
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_TOKEN_LIFETIME = 24 * 3600  # a CI token lives minutes; a day-long one is refused
USED_PREFIX = "oidc:used:"
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class VerifiedToken:
    """The claims of an ID token whose signature, issuer, audience and times were checked."""

    issuer: str
    audiences: tuple[str, ...]
    claims: Mapping[str, Any]
    expires_at: float


@dataclass
class _IssuerKeys:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")  # last successful fetch
    attempted_at: float = float("-inf")  # last attempt, successful or not


def is_allowed_issuer_url(issuer: str, *, allow_http: bool) -> bool:
    """True for https URLs, and for http on a loopback host when `allow_http` is set."""
    parts = urlsplit(issuer)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not allow_http or not parts.hostname:
        return False
    if parts.hostname in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


class JwksCache:
    """Per-process cache of each issuer's signing keys, keyed by `kid`."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._clock = clock
        self._issuers: dict[str, _IssuerKeys] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=FETCH_TIMEOUT, transport=transport)
        self.fetches = 0  # JWKS documents fetched (for tests and the bench)

    def key(self, issuer: str, kid: str, settings: Settings) -> jwt.PyJWK:
        """The issuer's key `kid`, fetching the keys when stale or on an unknown `kid`."""
        with self._lock:  # one fetch at a time per process: no storm of concurrent refreshes
            entry = self._issuers.setdefault(issuer, _IssuerKeys())
            now = self._clock()
            is_fresh = now - entry.fetched_at < settings.oidc_jwks_ttl
            if kid in entry.keys and is_fresh:
                return entry.keys[kid]
            if now - entry.attempted_at < settings.oidc_jwks_cooldown:
                if kid in entry.keys:
                    return entry.keys[kid]  # stale but not refetched yet: still the issuer's
                if entry.fetched_at < entry.attempted_at:
                    raise _unavailable(issuer, settings, now - entry.attempted_at)
                raise InvalidIdToken("The token's key id (kid) is not one of the issuer's keys.")
            entry.attempted_at = now
            try:
                entry.keys = self._fetch_keys(issuer, settings)
            except IssuerUnavailable:
                if kid in entry.keys:
                    return entry.keys[kid]  # the issuer is down; its cached key still holds
                raise
            entry.fetched_at = now
            if kid not in entry.keys:
                raise InvalidIdToken("The token's key id (kid) is not one of the issuer's keys.")
            return entry.keys[kid]

    def _fetch_keys(self, issuer: str, settings: Settings) -> dict[str, jwt.PyJWK]:
        discovery = self._get_json(f"{issuer}/.well-known/openid-configuration", issuer, settings)
        jwks_uri = discovery.get("jwks_uri")
        if discovery.get("issuer") != issuer or not isinstance(jwks_uri, str):
            raise _unavailable(issuer, settings, 0, "its discovery document is not for it")
        if not is_allowed_issuer_url(jwks_uri, allow_http=settings.oidc_allow_http):
            raise _unavailable(issuer, settings, 0, "its jwks_uri is not https")
        self.fetches += 1
        document = self._get_json(jwks_uri, issuer, settings)
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise _unavailable(issuer, settings, 0, "its key set has no keys")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            parsed = _signing_key(entry)
            if parsed is not None:
                keys[str(entry["kid"])] = parsed
        return keys

    def _get_json(self, url: str, issuer: str, settings: Settings) -> dict[str, Any]:
        try:
            with self._client.stream("GET", url, follow_redirects=False) as response:
                status = response.status_code
                content = b""
                for chunk in response.iter_bytes():
                    content += chunk
                    if len(content) > MAX_DOCUMENT_BYTES:  # read no further than the limit
                        raise _unavailable(issuer, settings, 0, "its answer is too large")
        except httpx.HTTPError:
            raise _unavailable(issuer, settings, 0) from None
        if status != 200:
            raise _unavailable(issuer, settings, 0, f"it answered HTTP {status}")
        try:
            data = json.loads(content)
        except ValueError:
            raise _unavailable(issuer, settings, 0, "it answered with something not JSON") from None
        if not isinstance(data, dict):
            raise _unavailable(issuer, settings, 0, "it answered with something not a JSON object")
        return data

    def clear(self) -> None:
        """Forget every issuer's keys (tests)."""
        with self._lock:
            self._issuers.clear()


def _signing_key(entry: object) -> jwt.PyJWK | None:
    """A usable RS256/ES256 public key from one JWK, else None (skipped, never an error)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
        return None
    if entry.get("use", "sig") != "sig" or entry.get("kty") not in ("RSA", "EC"):
        return None
    if entry.get("alg") not in (None, *ALGORITHMS):
        return None
    try:
        key = jwt.PyJWK(entry)
    except (PyJWKError, InvalidKeyError, ValueError, TypeError):
        return None
    return key if key.algorithm_name in ALGORITHMS else None


def _unavailable(
    issuer: str, settings: Settings, waited: float, why: str = ""
) -> IssuerUnavailable:
    retry = max(1, int(settings.oidc_jwks_cooldown - waited)) if settings.oidc_jwks_cooldown else 5
    reason = f" ({why})" if why else ""
    return IssuerUnavailable(
        f"The identity provider {issuer} cannot be reached{reason}; retry later.",
        retry_after=retry,
    )


_CACHE = JwksCache()


def cache() -> JwksCache:
    """This process's key cache."""
    return _CACHE


def unverified_issuer(token: str) -> str:
    """The `iss` a token claims, before any check; InvalidIdToken when it is not a JWT."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except PyJWTError:
        raise InvalidIdToken("The ID token is not a well-formed JWT.") from None
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise InvalidIdToken("The ID token names no issuer (iss).")
    return issuer


def verify(token: str, *, issuer: str, audiences: Collection[str]) -> VerifiedToken:
    """Check a token from `issuer` for one of `audiences`; spend it (once) and return its claims.

    `issuer` must be one the caller trusts (named by a policy): it is the only URL fetched.
    Raises InvalidIdToken (401) for anything wrong with the token, IssuerUnavailable (503).
    """
    settings = current().settings
    if not is_allowed_issuer_url(issuer, allow_http=settings.oidc_allow_http):
        raise InvalidIdToken("The token's issuer is not an https URL.")
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError:
        raise InvalidIdToken("The ID token is not a well-formed JWT.") from None
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm not in ALGORITHMS:
        raise InvalidIdToken("The ID token must be signed with RS256 or ES256.")
    if not isinstance(kid, str) or not kid:
        raise InvalidIdToken("The ID token names no key id (kid).")
    key = _CACHE.key(issuer, kid, settings)
    if key.algorithm_name != algorithm:
        raise InvalidIdToken("The ID token's algorithm does not match its key.")
    claims = _decode(token, key, algorithm, issuer, audiences, settings.oidc_leeway)
    _spend(token, claims, settings.oidc_leeway)
    audience = claims["aud"]
    return VerifiedToken(
        issuer=issuer,
        audiences=tuple(audience) if isinstance(audience, list) else (str(audience),),
        claims=claims,
        expires_at=float(claims["exp"]),
    )


def _decode(
    token: str,
    key: jwt.PyJWK,
    algorithm: str,
    issuer: str,
    audiences: Collection[str],
    leeway: int,
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,
            algorithms=[algorithm],
            audience=list(audiences),
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidIdToken("The ID token has expired.") from None
    except jwt.InvalidAudienceError:
        raise InvalidIdToken("The ID token is for another audience (aud).") from None
    except jwt.InvalidIssuerError:
        raise InvalidIdToken("The ID token is from another issuer (iss).") from None
    except jwt.ImmatureSignatureError:
        raise InvalidIdToken("The ID token is not valid yet (nbf/iat).") from None
    except PyJWTError:
        raise InvalidIdToken("The ID token's signature or claims do not verify.") from None
    if float(claims["exp"]) - float(claims["iat"]) > MAX_TOKEN_LIFETIME:
        raise InvalidIdToken("The ID token lives longer than a day; ask for a short-lived one.")
    return claims


def _spend(token: str, claims: Mapping[str, Any], leeway: int) -> None:
    """Mark the token used until it expires; InvalidIdToken when it was used before."""
    jti = claims.get("jti")
    material = f"{claims['iss']}\0jti\0{jti}" if isinstance(jti, str) and jti else token
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
    lifetime = max(1, int(float(claims["exp"]) - time.time()) + leeway)
    if not current().redis.set(USED_PREFIX + digest, "1", nx=True, ex=lifetime):
        raise InvalidIdToken("This ID token was already used; each token is good for one request.")
