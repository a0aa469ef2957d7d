"""GCP Secret Manager over its v1 REST API with httpx (not the gRPC client).

Why REST: `google-cloud-secret-manager` brings grpcio, protobuf and google-auth into
the worker image (tens of MB of native wheels) for four calls; httpx is already a
dependency and pyjwt signs the service account's token request.

Calls used (Google's published v1 reference): `secrets.list`, `secrets.create`,
`secrets.addVersion`, `secrets.versions.access` and `secrets.versions.get`, plus the
OAuth 2.0 JWT-bearer token exchange at the key file's `token_uri`. Access calls count
against the 90,000/min access quota, the rest against the 600/min read/write quotas.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import httpx
import jwt

from envcat.services.connectors.provider import (
    CredentialsRejected,
    ProviderError,
    RemoteValue,
    Throttled,
    Unreachable,
)
from envcat.services.connectors.ratelimit import Bucket, backoff_seconds

log = logging.getLogger("envcat.connectors.gcp")
DEFAULT_ENDPOINT = "https://secretmanager.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TIMEOUT = httpx.Timeout(10.0)
MAX_THROTTLE_RETRIES = 8


def _secret_id(resource: str) -> str:
    return resource.rsplit("/", 1)[-1]


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class GcpStore:
    """One GCP connection (a project and a service account)."""

    def __init__(
        self,
        *,
        project_id: str,
        service_account_json: str,
        endpoint_url: str | None,
        access: Bucket,
        reads: Bucket,
        writes: Bucket,
    ) -> None:
        self._project = project_id
        self._account: dict[str, Any] = json.loads(service_account_json)
        self._access, self._reads, self._writes = access, reads, writes
        self._http = httpx.Client(base_url=endpoint_url or DEFAULT_ENDPOINT, timeout=TIMEOUT)
        self._token: str | None = None
        self._changed: dict[str, datetime | None] = {}

    def _bearer(self) -> str:
        if self._token is None:
            now = int(time.time())
            claims = {
                "iss": self._account["client_email"],
                "scope": SCOPE,
                "aud": self._account["token_uri"],
                "iat": now,
                "exp": now + 3600,
            }
            try:
                assertion = jwt.encode(claims, self._account["private_key"], algorithm="RS256")
            except (ValueError, TypeError, jwt.PyJWTError):
                raise CredentialsRejected(
                    "The service account's private key is unusable."
                ) from None
            try:
                reply = httpx.post(
                    self._account["token_uri"],
                    data={
                        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": assertion,
                    },
                    timeout=TIMEOUT,
                )
            except httpx.TransportError as exc:
                raise Unreachable(
                    f"GCP token endpoint unreachable ({type(exc).__name__})."
                ) from None
            if reply.status_code != 200:
                raise CredentialsRejected(f"GCP refused the service account ({reply.status_code}).")
            self._token = str(reply.json()["access_token"])
        return self._token

    def _call(self, bucket: Bucket, request: Callable[[dict[str, str]], httpx.Response]) -> Any:
        for attempt in range(MAX_THROTTLE_RETRIES):
            bucket.take()
            try:
                reply = request({"Authorization": f"Bearer {self._bearer()}"})
            except httpx.TransportError as exc:
                raise Unreachable(f"GCP is unreachable ({type(exc).__name__}).") from None
            if reply.status_code == 429:
                delay = backoff_seconds(attempt)
                bucket.pause(delay)
                time.sleep(delay)
                continue
            if reply.status_code in (401, 403):
                raise CredentialsRejected(f"GCP refused the credentials ({reply.status_code}).")
            if reply.status_code == 404:
                return None
            if reply.status_code >= 400:
                raise ProviderError(f"GCP answered {reply.status_code}.")
            return reply.json()
        raise Throttled(f"GCP kept throttling after {MAX_THROTTLE_RETRIES} attempts.")

    def _get(
        self, path: str, params: dict[str, str | int] | None = None
    ) -> Callable[[dict[str, str]], httpx.Response]:
        return lambda headers: self._http.get(path, params=params, headers=headers)

    def _path(self, suffix: str = "") -> str:
        return f"/v1/projects/{self._project}/secrets{suffix}"

    def check(self) -> None:
        """List one secret: proves the key, the token exchange and the project."""
        self._call(
            self._reads, lambda h: self._http.get(self._path(), params={"pageSize": 1}, headers=h)
        )

    def _list(self, prefix: str) -> list[str]:
        names: list[str] = []
        token = ""
        while True:
            params: dict[str, str | int] = {"pageSize": 250}
            if token:
                params["pageToken"] = token
            page = (
                self._call(
                    self._reads,
                    self._get(self._path(), params),
                )
                or {}
            )
            for secret in page.get("secrets", []):
                name = _secret_id(secret["name"])
                if name.startswith(prefix):
                    names.append(name)
            token = page.get("nextPageToken", "")
            if not token:
                return names

    def snapshot(self, prefix: str | None, names: Iterable[str]) -> dict[str, RemoteValue]:
        """Access `versions/latest` of each secret under `prefix` plus `names`."""
        wanted = list(dict.fromkeys([*(self._list(prefix) if prefix is not None else []), *names]))
        out: dict[str, RemoteValue] = {}
        for name in wanted:
            reply = self._call(
                self._access,
                self._get(self._path(f"/{name}/versions/latest:access")),
            )
            if reply is None:
                continue
            data = base64.b64decode(reply["payload"]["data"])
            try:
                value = data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # binary payloads are not environment variables
            out[name] = RemoteValue(value, _secret_id(reply["name"]), None)
        return out

    def write(self, name: str, value: str, *, exists: bool, token: str) -> str:
        """Create the secret if needed, then add a version; return its number.

        GCP has no request token: a resumed sync compares values first, so a
        version already added is never added twice.
        """
        if not exists:
            created = self._call(
                self._writes,
                lambda h: self._http.post(
                    self._path(),
                    params={"secretId": name},
                    json={"replication": {"automatic": {}}, "labels": {"managed-by": "envcat"}},
                    headers=h,
                ),
            )
            del created
        payload = base64.b64encode(value.encode("utf-8")).decode("ascii")
        version = self._call(
            self._writes,
            lambda h: self._http.post(
                self._path(f"/{name}:addVersion"), json={"payload": {"data": payload}}, headers=h
            ),
        )
        if version is None:
            raise ProviderError(f"GCP has no secret {name}.")
        self._changed[name] = _time(version.get("createTime"))
        return _secret_id(version["name"])

    def changed_at(self, name: str) -> datetime | None:
        """createTime of the latest version (one read call, only asked for conflicts)."""
        if name not in self._changed:
            reply = self._call(
                self._reads,
                lambda h: self._http.get(self._path(f"/{name}/versions/latest"), headers=h),
            )
            self._changed[name] = _time((reply or {}).get("createTime"))
        return self._changed[name]
