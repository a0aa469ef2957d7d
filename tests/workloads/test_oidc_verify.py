"""ID-token verification against a real loopback issuer (envcat.services.oidc, issue #16)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from envcat.services import oidc
from envcat.services.errors import InvalidIdToken, IssuerUnavailable
from tests.workloads.issuer import AUDIENCE, LoopbackIssuer, forge


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[oidc.JwksCache]:
    cache = oidc.JwksCache()
    monkeypatch.setattr(oidc, "_CACHE", cache)
    yield cache


def _verify(issuer: LoopbackIssuer, token: str) -> oidc.VerifiedToken:
    return oidc.verify(token, issuer=issuer.url, audiences=[AUDIENCE])


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_valid_token_verifies_once(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache, alg: str
) -> None:
    token = issuer.mint(alg)
    verified = _verify(issuer, token)
    assert verified.claims["repository"] == "acme/api"
    assert verified.audiences == (AUDIENCE,)
    with pytest.raises(InvalidIdToken, match="already used"):
        _verify(issuer, token)


def test_a_token_without_jti_is_still_single_use(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache
) -> None:
    token = issuer.mint(jti=None)
    _verify(issuer, token)
    with pytest.raises(InvalidIdToken, match="already used"):
        _verify(issuer, token)


def test_alg_none_and_hs256_with_the_public_key_are_refused(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache
) -> None:
    claims = issuer.claims()
    unsigned = forge({"alg": "none", "typ": "JWT", "kid": issuer.rsa_kid}, claims)
    confused = forge(
        {"alg": "HS256", "typ": "JWT", "kid": issuer.rsa_kid}, claims, issuer.public_pem()
    )
    for token in (unsigned, confused):
        with pytest.raises(InvalidIdToken, match="RS256 or ES256"):
            _verify(issuer, token)
    # nothing was spent by the forgeries: the jti is still fresh for a real token
    assert fresh_cache.fetches == 0


def test_a_token_signed_by_another_key_with_the_issuers_kid_is_refused(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache
) -> None:
    impostor = rsa.generate_private_key(65537, 2048)
    token = jwt.encode(
        issuer.claims(), impostor, algorithm="RS256", headers={"kid": issuer.rsa_kid}
    )
    with pytest.raises(InvalidIdToken, match="signature"):
        _verify(issuer, token)


def test_an_es256_header_on_an_rsa_kid_is_refused(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache
) -> None:
    token = issuer.mint("ES256", kid=issuer.rsa_kid)
    with pytest.raises(InvalidIdToken, match="does not match its key"):
        _verify(issuer, token)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"aud": "https://someone-else.test"}, "another audience"),
        ({"iss": "http://127.0.0.1:9/other"}, "another issuer"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"iat": int(time.time()) + 600}, "not valid yet"),
        ({"exp": int(time.time()) + 3 * 86400}, "longer than a day"),
        ({"exp": None}, "signature or claims"),
    ],
)
def test_bad_claims_are_refused_with_a_clear_reason(
    service_app: Flask,
    issuer: LoopbackIssuer,
    fresh_cache: oidc.JwksCache,
    overrides: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(InvalidIdToken, match=message):
        _verify(issuer, issuer.mint(**overrides))


def test_small_clock_skew_is_tolerated(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache
) -> None:
    now = int(time.time())
    _verify(issuer, issuer.mint(iat=now + 10, nbf=now + 10))
    _verify(issuer, issuer.mint(exp=now - 10))


def test_a_key_rotation_at_the_issuer_is_picked_up(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache
) -> None:
    _verify(issuer, issuer.mint())
    issuer.rotate()
    verified = _verify(issuer, issuer.mint())  # new kid: fetched again (cooldown 0 here)
    assert verified.claims["repository"] == "acme/api"
    assert issuer.jwks_hits == 2


def test_a_new_issuer_at_an_earlier_ones_url_is_verified_with_its_own_keys(
    service_app: Flask, fresh_cache: oidc.JwksCache
) -> None:
    """The api's key cache is per process and keyed by issuer URL: a test issuer started
    later on a reused port must not be checked against the earlier one's cached key (its
    kids differ, so the cache fetches). Constant kids made a live test fail in one run."""
    first = LoopbackIssuer().start()
    try:
        _verify(first, first.mint())
    finally:
        first.stop()
    second = LoopbackIssuer(port=first.port).start()
    try:
        assert _verify(second, second.mint()).claims["repository"] == "acme/api"
        assert second.jwks_hits == 1
    finally:
        second.stop()


def test_unknown_kids_refetch_at_most_once_per_cooldown(
    service_app: Flask, issuer: LoopbackIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    cache = oidc.JwksCache(clock=lambda: now[0])
    monkeypatch.setattr(oidc, "_CACHE", cache)
    settings = service_app.extensions["envcat"].settings.model_copy(
        update={"oidc_jwks_cooldown": 60}
    )
    cache.key(issuer.url, issuer.rsa_kid, settings)
    for number in range(20):  # a storm of forged kids
        with pytest.raises(InvalidIdToken, match="kid"):
            cache.key(issuer.url, f"forged-{number}", settings)
    assert issuer.jwks_hits == 1
    issuer.rotate()
    with pytest.raises(InvalidIdToken, match="kid"):
        cache.key(issuer.url, issuer.rsa_kid, settings)  # within the cooldown: not fetched
    now[0] += 61
    cache.key(issuer.url, issuer.rsa_kid, settings)
    assert issuer.jwks_hits == 2


def test_an_unreachable_issuer_is_a_503_with_retry_after(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache
) -> None:
    token = issuer.mint()
    issuer.stop()
    with pytest.raises(IssuerUnavailable) as caught:
        _verify(issuer, token)
    assert caught.value.status == 503
    assert caught.value.code == "issuer_unavailable"
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1


def test_cached_keys_still_verify_while_the_issuer_is_down(
    service_app: Flask, issuer: LoopbackIssuer, fresh_cache: oidc.JwksCache
) -> None:
    _verify(issuer, issuer.mint())
    later = issuer.mint()
    issuer.stop()
    assert _verify(issuer, later).claims["run_id"] == "123"


def test_https_is_required_unless_loopback_http_is_allowed() -> None:
    github = "https://token.actions.githubusercontent.com"
    assert oidc.is_allowed_issuer_url(github, allow_http=False)
    assert not oidc.is_allowed_issuer_url("http://127.0.0.1:8080", allow_http=False)
    assert oidc.is_allowed_issuer_url("http://127.0.0.1:8080", allow_http=True)
    assert not oidc.is_allowed_issuer_url("http://example.test", allow_http=True)
    assert not oidc.is_allowed_issuer_url("ftp://127.0.0.1", allow_http=True)


class HugeIssuer(LoopbackIssuer):
    """An issuer whose key set is far larger than any real one."""

    def documents(self) -> dict[str, bytes]:
        documents = super().documents()
        documents["/jwks"] = b'{"keys": [' + b'{"kty": "oct"},' * 100_000 + b"{}]}"
        return documents


def test_an_oversized_key_set_is_refused_without_reading_it_all(
    service_app: Flask, fresh_cache: oidc.JwksCache
) -> None:
    huge = HugeIssuer().start()
    try:
        with pytest.raises(IssuerUnavailable, match="too large"):
            oidc.verify(huge.mint(), issuer=huge.url, audiences=[AUDIENCE])
    finally:
        huge.stop()
