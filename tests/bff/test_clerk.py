"""Clerk session tokens: only well-formed, correctly signed, current tokens are trusted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from envcat.bff.clerk import ClerkVerifier, InvalidToken, frontend_api_host
from envcat.core.settings import ConfigError, Settings
from tests.support import free_port, serve_in_background
from tests.support.bff import module_stack
from tests.support.clerk import FAPI_HOST, ISSUER, PARTY, PUBLISHABLE_KEY, mint, pem
from tests.support.settings import make_settings
from tests.support.stack import LiveStack


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def clerk_settings(settings: Settings, rsa_key: rsa.RSAPrivateKey, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_provider": "clerk",
        "clerk_jwt_key": pem(rsa_key),
        "clerk_issuer": ISSUER,
        "clerk_authorized_parties": PARTY,
    }
    values.update(extra)
    return make_settings(settings.database_url, settings.redis_url, settings.broker_url, **values)


@pytest.fixture
def verifier(settings: Settings, rsa_key: rsa.RSAPrivateKey) -> ClerkVerifier:
    return ClerkVerifier(clerk_settings(settings, rsa_key))


def test_valid_token_without_organisation_acts_in_the_personal_tenant(
    verifier: ClerkVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    claims = verifier.verify(mint(rsa_key, email="ada@example.test"))
    assert (claims.user_id, claims.tenant_id, claims.org_id) == ("user_2abc", "user_2abc", None)
    assert claims.email == "ada@example.test"


def test_v2_organisation_claim_selects_the_org_tenant(
    verifier: ClerkVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = mint(rsa_key, v=2, o={"id": "org_9", "rol": "admin", "slg": "acme"})
    claims = verifier.verify(token)
    assert (claims.tenant_id, claims.org_role, claims.org_slug) == ("org_9", "org:admin", "acme")


def test_v1_organisation_claims_select_the_org_tenant(
    verifier: ClerkVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    claims = verifier.verify(mint(rsa_key, org_id="org_7", org_role="org:member"))
    assert (claims.tenant_id, claims.org_role) == ("org_7", "org:member")


def _hs256_with_public_key(rsa_key: rsa.RSAPrivateKey) -> str:
    # Alg confusion: sign with HMAC using the public key as the secret (built by hand,
    # since PyJWT itself refuses to do it).
    header = {"alg": "HS256", "typ": "JWT"}
    now = int(time.time())
    payload = {"sub": "user_2abc", "iss": ISSUER, "azp": PARTY, "iat": now, "exp": now + 60}

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(payload)}"
    mac = hmac.new(pem(rsa_key).encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_azp",
        "missing_azp",
        "bad_signature",
        "hs256_with_public_key",
        "missing_sub",
        "malformed_sub",
        "malformed_org",
        "garbage",
    ],
)
def test_bad_tokens_are_rejected(
    verifier: ClerkVerifier,
    rsa_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
    case: str,
) -> None:
    now = int(time.time())
    tokens: dict[str, Callable[[], str]] = {
        "expired": lambda: mint(rsa_key, exp=now - 60, iat=now - 120, nbf=now - 120),
        "not_yet_valid": lambda: mint(rsa_key, nbf=now + 120),
        "wrong_issuer": lambda: mint(rsa_key, iss="https://evil.example"),
        "wrong_azp": lambda: mint(rsa_key, azp="https://evil.example"),
        "missing_azp": lambda: mint(rsa_key, azp=None),
        "bad_signature": lambda: mint(other_key),
        "hs256_with_public_key": lambda: _hs256_with_public_key(rsa_key),
        "missing_sub": lambda: mint(rsa_key, sub=None),
        "malformed_sub": lambda: mint(rsa_key, sub="user 1|evil"),
        "malformed_org": lambda: mint(rsa_key, org_id="org|x"),
        "garbage": lambda: "not.a.jwt",
    }
    with pytest.raises(InvalidToken):
        verifier.verify(tokens[case]())


def test_small_clock_skew_is_tolerated(verifier: ClerkVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    assert verifier.verify(mint(rsa_key, exp=now - 2)).user_id == "user_2abc"


def test_publishable_key_gives_the_frontend_api_host() -> None:
    encoded = base64.b64encode(b"clerk.envcat.example$").decode()
    assert frontend_api_host(f"pk_live_{encoded}") == "clerk.envcat.example"
    assert frontend_api_host(f"pk_test_{encoded.rstrip('=')}") == "clerk.envcat.example"
    bad_host = base64.b64encode(b'evil.example/x" onload=$').decode()
    for key in (None, "", "sk_live_abc", "pk_other_abc", "pk_test_!!!", f"pk_test_{bad_host}"):
        assert frontend_api_host(key) is None


def test_issuer_is_required(settings: Settings, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigError, match="CLERK_ISSUER"):
        ClerkVerifier(clerk_settings(settings, rsa_key, clerk_issuer=None))


@pytest.fixture
def jwks_server(rsa_key: rsa.RSAPrivateKey) -> Iterator[tuple[str, list[int]]]:
    """A local JWKS endpoint (Clerk's server is the one thing we stand in for)."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update(kid="ins_1", use="sig", alg="RS256")
    hits: list[int] = []

    @Request.application
    def app(request: Request) -> Response:
        hits.append(1)
        return Response(json.dumps({"keys": [jwk]}), mimetype="application/json")

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    serve_in_background(server)
    yield f"http://127.0.0.1:{port}/.well-known/jwks.json", hits
    server.shutdown()
    server.server_close()


def test_jwks_keys_are_fetched_once_and_cached(
    settings: Settings, rsa_key: rsa.RSAPrivateKey, jwks_server: tuple[str, list[int]]
) -> None:
    url, hits = jwks_server
    verifier = ClerkVerifier(
        clerk_settings(settings, rsa_key, clerk_jwt_key=None, clerk_jwks_url=url)
    )
    for _ in range(3):
        token = jwt.encode(
            {
                "sub": "user_2abc",
                "iss": ISSUER,
                "azp": PARTY,
                "iat": int(time.time()),
                "exp": int(time.time()) + 60,
            },
            rsa_key,
            algorithm="RS256",
            headers={"kid": "ins_1"},
        )
        assert verifier.verify(token).user_id == "user_2abc"
    assert len(hits) == 1


@pytest.fixture(scope="module")
def clerk_stack(
    redis_base_url: str,
    redis_dbs: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
    rsa_key: rsa.RSAPrivateKey,
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url,
        redis_dbs,
        tmp_path_factory,
        auth_provider="clerk",
        clerk_jwt_key=pem(rsa_key),
        clerk_issuer=ISSUER,
        clerk_authorized_parties=PARTY,
        clerk_publishable_key=PUBLISHABLE_KEY,
    ) as stack:
        yield stack


def test_first_call_provisions_the_user_just_in_time(
    clerk_stack: LiveStack, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = mint(rsa_key, sub="user_jit1", email="jit@example.test")
    with httpx.Client(base_url=clerk_stack.bff_url) as client:
        reply = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["tenant"]["id"] == "user_jit1"
        assert reply.json()["role"] == "owner"
        # A bearer caller needs no CSRF token: the browser never attaches it on its own.
        created = client.post(
            "/api/v1/bundles",
            json={"name": "clerk/app"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text


def test_org_token_acts_in_the_org_and_cookie_token_opens_pages(
    clerk_stack: LiveStack, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = mint(rsa_key, sub="user_jit2", v=2, o={"id": "org_acme", "rol": "admin", "slg": "acme"})
    with httpx.Client(base_url=clerk_stack.bff_url, cookies={"__session": token}) as client:
        me = client.get("/api/v1/me")
        assert me.status_code == 200, me.text
        assert (me.json()["tenant"]["id"], me.json()["role"]) == ("org_acme", "admin")
        page = client.get("/bundles")
        assert page.status_code == 200
        assert "Bundles" in page.text


def test_invalid_clerk_token_gets_no_access(
    clerk_stack: LiveStack, other_key: rsa.RSAPrivateKey
) -> None:
    forged = mint(other_key, sub="user_forged")
    with httpx.Client(base_url=clerk_stack.bff_url) as client:
        reply = client.get("/api/v1/bundles", headers={"Authorization": f"Bearer {forged}"})
        assert reply.status_code == 401
    with httpx.Client(base_url=clerk_stack.bff_url, cookies={"__session": forged}) as client:
        page = client.get("/bundles")
        assert page.status_code == 302
        assert page.headers["Location"].startswith("/sign-in?redirect_url=")


def test_clerk_sign_in_page_loads_clerk_js_allowed_by_the_csp(clerk_stack: LiveStack) -> None:
    reply = httpx.get(f"{clerk_stack.bff_url}/sign-in?redirect_url=/keys")
    assert reply.status_code == 200
    script = f'src="https://{FAPI_HOST}/npm/@clerk/clerk-js@5/dist/clerk.browser.js"'
    assert script in reply.text
    assert 'data-redirect-url="/keys"' in reply.text
    policy = reply.headers["Content-Security-Policy"]
    assert f"script-src 'self' https://{FAPI_HOST};" in policy
    assert "frame-ancestors 'none'" in policy


def test_a_clerk_user_the_api_refuses_is_told_not_bounced(
    clerk_stack: LiveStack, rsa_key: rsa.RSAPrivateKey
) -> None:
    from datetime import UTC, datetime

    from envcat.models import User, db

    token = mint(rsa_key, sub="user_gone", email="gone@example.test")
    with httpx.Client(base_url=clerk_stack.bff_url) as client:
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/me", headers=bearer).status_code == 200  # provisioned
    with clerk_stack.api_app.app_context():
        user = db.session.get(User, "user_gone")
        assert user is not None
        user.deleted_at = datetime.now(tz=UTC)
        db.session.commit()
    with httpx.Client(base_url=clerk_stack.bff_url, cookies={"__session": token}) as client:
        assert client.get("/bundles").headers["Location"].startswith("/sign-in")
        refused = client.get("/sign-in?redirect_url=/bundles")
        assert refused.status_code == 403
        assert "no active account" in refused.text
        assert "clerk.browser.js" not in refused.text  # no script to bounce them back
        signing_out = client.get("/sign-in?signed_out=1")
        assert signing_out.status_code == 200
        assert 'data-signed-out="1"' in signing_out.text
