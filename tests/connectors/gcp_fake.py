"""A loopback stand-in for GCP Secret Manager v1 REST and Google's OAuth token endpoint.

A contract test, not a claim of GCP coverage: it implements only the calls EnvCat makes,
shaped after Google's published v1 reference (resource names, `payload.data` base64,
`versions/latest` alias, `secretId` query parameter, `nextPageToken` paging, 64 KiB
payload limit, 401/403/404/409/429 status codes) and the JWT-bearer grant (RFC 7523).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.support import free_port, serve_in_background

MAX_PAYLOAD = 64 * 1024
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")


def service_account(
    token_uri: str, email: str = "envcat@proj.iam.gserviceaccount.com"
) -> tuple[str, Any]:
    """A service-account key file (JSON text) and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "project_id": "envcat-test",
        "private_key_id": secrets.token_hex(8),
        "private_key": pem,
        "client_email": email,
        "token_uri": token_uri,
    }
    return json.dumps(account), key.public_key()


@dataclass
class FakeSecretManager:
    project: str = "envcat-test"
    port: int = field(default_factory=free_port)
    accounts: dict[str, Any] = field(default_factory=dict)  # client_email → public key
    secrets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # id → [(data, time)]
    calls: Counter[str] = field(default_factory=Counter)
    throttle: int = 0
    _tokens: set[str] = field(default_factory=set)
    _server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, secret_id: str, value: str) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.secrets.setdefault(secret_id, []).append(
            (base64.b64encode(value.encode()).decode(), now)
        )

    def latest(self, secret_id: str) -> str:
        return base64.b64decode(self.secrets[secret_id][-1][0]).decode()

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        serve_in_background(self._server)

    def stop(self) -> None:
        self._server.shutdown()

    # ---- the HTTP surface -------------------------------------------------------------

    def _app(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        return self._route(request)(environ, start_response)

    @staticmethod
    def _error(status: int, reason: str) -> Response:
        body = {"error": {"code": status, "message": reason, "status": reason}}
        return Response(json.dumps(body), status=status, content_type="application/json")

    @staticmethod
    def _json(body: dict[str, Any]) -> Response:
        return Response(json.dumps(body), content_type="application/json")

    def _route(self, request: Request) -> Response:
        if request.path == "/token":
            return self._token(request)
        self.calls[f"{request.method} {request.path.rsplit('/', 1)[-1]}"] += 1
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self._tokens:
            return self._error(401, "UNAUTHENTICATED")
        if self.throttle > 0:
            self.throttle -= 1
            return self._error(429, "RESOURCE_EXHAUSTED")
        prefix = f"/v1/projects/{self.project}/secrets"
        if not request.path.startswith(prefix):
            return self._error(403, "PERMISSION_DENIED")
        rest = request.path[len(prefix) :]
        if rest == "" and request.method == "GET":
            return self._list(request)
        if rest == "" and request.method == "POST":
            return self._create(request)
        match = re.fullmatch(r"/([^/:]+)(:addVersion|/versions/latest(:access)?)", rest)
        if match is None:
            return self._error(404, "NOT_FOUND")
        secret_id, action = match.group(1), match.group(2)
        if secret_id not in self.secrets:
            return self._error(404, "NOT_FOUND")
        if action == ":addVersion" and request.method == "POST":
            return self._add_version(secret_id, request)
        versions = self.secrets[secret_id]
        if not versions:
            return self._error(404, "NOT_FOUND")
        name = f"projects/{self.project}/secrets/{secret_id}/versions/{len(versions)}"
        if action.endswith(":access"):
            return self._json({"name": name, "payload": {"data": versions[-1][0]}})
        return self._json({"name": name, "createTime": versions[-1][1], "state": "ENABLED"})

    def _token(self, request: Request) -> Response:
        if request.form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._json({"error": "unsupported_grant_type"})
        assertion = request.form.get("assertion", "")
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False})["iss"]
            jwt.decode(
                assertion, self.accounts[issuer], algorithms=["RS256"], audience=f"{self.url}/token"
            )
        except (KeyError, jwt.PyJWTError):
            return Response(
                json.dumps({"error": "invalid_grant"}), status=400, content_type="application/json"
            )
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        return self._json({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _list(self, request: Request) -> Response:
        size = min(int(request.args.get("pageSize", 25)), 25000)
        start = int(request.args.get("pageToken") or 0)
        names = sorted(self.secrets)[start : start + size]
        body: dict[str, Any] = {
            "secrets": [{"name": f"projects/{self.project}/secrets/{n}"} for n in names]
        }
        if start + size < len(self.secrets):
            body["nextPageToken"] = str(start + size)
        return self._json(body)

    def _create(self, request: Request) -> Response:
        secret_id = request.args.get("secretId", "")
        if not _SECRET_ID.fullmatch(secret_id):
            return self._error(400, "INVALID_ARGUMENT")
        if secret_id in self.secrets:
            return self._error(409, "ALREADY_EXISTS")
        body = request.get_json(silent=True) or {}
        if "replication" not in body:
            return self._error(400, "INVALID_ARGUMENT")
        self.secrets[secret_id] = []
        return self._json({"name": f"projects/{self.project}/secrets/{secret_id}"})

    def _add_version(self, secret_id: str, request: Request) -> Response:
        data = ((request.get_json(silent=True) or {}).get("payload") or {}).get("data", "")
        if len(base64.b64decode(data)) > MAX_PAYLOAD:
            return self._error(400, "INVALID_ARGUMENT")
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.secrets[secret_id].append((data, now))
        number = len(self.secrets[secret_id])
        return self._json(
            {
                "name": f"projects/{self.project}/secrets/{secret_id}/versions/{number}",
                "createTime": now,
                "state": "ENABLED",
            }
        )
