"""A real OIDC issuer on loopback for tests (issue #16).

A threaded HTTP server serves the discovery document and the JWKS; RS256 and ES256
keys are generated per run and tokens are minted with PyJWT, shaped like GitHub
Actions' ID tokens. `rotate()` replaces the RSA key (new `kid`), `stop()` takes the
issuer down (connections refused), `jwks_hits` counts key-set fetches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support import free_port, serve_in_background

AUDIENCE = "https://envcat.test"
REPOSITORY = "acme/api"
REF = "refs/heads/main"

# Settings that let the api trust this issuer over http on loopback, keys refetched at once.
OIDC_SETTINGS: dict[str, Any] = {"oidc_allow_http": True, "oidc_jwks_cooldown": 0}


def _public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "RS256"
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "ES256"
    jwk.update(kid=kid, use="sig")
    return cast(dict[str, Any], jwk)


def _kid(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


class LoopbackIssuer:
    """Serves `/.well-known/openid-configuration` and `/jwks` on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Key ids unique to this issuer, as a real issuer's are: a later issuer of a test in
        # the same process may get the same port (so the same URL), and the api's per-process
        # key cache must then meet unknown kids and fetch, not reuse the earlier issuer's key.
        self.rsa_kid, self.rsa_key = _kid("rsa"), rsa.generate_private_key(65537, 2048)
        self.ec_kid, self.ec_key = _kid("ec"), ec.generate_private_key(ec.SECP256R1())
        self.jwks_hits = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- serving ------------------------------------------------------------------------

    def documents(self) -> dict[str, bytes]:
        discovery = {"issuer": self.url, "jwks_uri": f"{self.url}/jwks"}
        keys = [_public_jwk(self.rsa_key, self.rsa_kid), _public_jwk(self.ec_key, self.ec_kid)]
        return {
            "/.well-known/openid-configuration": json.dumps(discovery).encode(),
            "/jwks": json.dumps({"keys": keys}).encode(),
        }

    def start(self) -> LoopbackIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = issuer.documents().get(self.path)
                if self.path == "/jwks":
                    issuer.jwks_hits += 1
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = serve_in_background(self._server)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def rotate(self) -> None:
        """A new RSA key with a new kid; the old one is no longer published."""
        self.rsa_kid, self.rsa_key = _kid("rsa"), rsa.generate_private_key(65537, 2048)

    # ---- tokens -------------------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": f"repo:{REPOSITORY}:environment:production",
            "repository": REPOSITORY,
            "repository_owner": "acme",
            "ref": REF,
            "sha": "0123456789abcdef0123456789abcdef01234567",
            "environment": "production",
            "run_id": "123",
            "job_workflow_ref": f"{REPOSITORY}/.github/workflows/deploy.yml@{REF}",
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def mint(self, alg: str = "RS256", kid: str | None = None, **overrides: Any) -> str:
        """A signed token; `None` as an override drops that claim."""
        key = self.rsa_key if alg == "RS256" else self.ec_key
        default_kid = self.rsa_kid if alg == "RS256" else self.ec_kid
        return jwt.encode(
            self.claims(**overrides), key, algorithm=alg, headers={"kid": kid or default_kid}
        )

    def public_pem(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def forge(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A hand-made JWT: unsigned (alg none) or HMAC-signed with `hmac_key` (the alg-confusion
    attack: the issuer's public key used as an HS256 secret), which PyJWT refuses to mint."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return signing_input + "."
    mac = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


class GithubTokenService:
    """Stands in for GitHub Actions' ID-token service (outside this machine): answers
    `GET …?audience=A` with the bearer the runner got, minting a token from `issuer`."""

    BEARER = "runner-request-token"

    def __init__(self, issuer: LoopbackIssuer, **claims: Any) -> None:
        from urllib.parse import parse_qs, urlsplit

        self.port = free_port()
        self.audiences: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"bearer {service.BEARER}":
                    self.send_response(401)
                    self.end_headers()
                    return
                audience = parse_qs(urlsplit(self.path).query)["audience"][0]
                service.audiences.append(audience)
                body = json.dumps({"value": issuer.mint(aud=audience, **claims)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        serve_in_background(self._server)

    @property
    def environ(self) -> dict[str, str]:
        return {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"http://127.0.0.1:{self.port}/t?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.BEARER,
        }

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
