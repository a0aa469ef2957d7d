"""The `up --demo` account and bundle, made through the api's own signed endpoints.

Everything is idempotent: a second `up --demo` finds the account (its password
is kept in DATA_DIR/demo.json, mode 0600), the bundle and the keys, and
creates only what is missing.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from envcat.bff.apiclient import BFF_SIGNER, HmacAuth, Signer
from envcat.ops.config import OpsError, write_private_file

DEMO_EMAIL = "demo@example.com"
DEMO_BUNDLE = "demo/app"
DEMO_FILE = "demo.json"
API_TIMEOUT = httpx.Timeout(10.0)
_SIGN_UP = "/api/v1/internal/local-auth/sign-up"
_SIGN_IN = "/api/v1/internal/local-auth/sign-in"


@dataclass(frozen=True)
class DemoKey:
    """One key of the demo bundle."""

    name: str
    value: str
    is_secret: bool
    description: str


@dataclass(frozen=True)
class DemoAccount:
    """What `up --demo` prints, and what a script needs to approve as the demo user."""

    email: str
    password: str
    user_id: str
    tenant_id: str
    bundle_id: str
    workspace: str = ""  # the slug a CLI names with -w


def demo_keys() -> list[DemoKey]:
    """The keys the demo bundle holds (the token is fresh each time it is created)."""
    return [
        DemoKey(
            "DATABASE_URL",
            "postgresql://demo:demo-password@db.example.com:5432/demo",
            True,
            "Demo database connection string",
        ),
        DemoKey("API_TOKEN", f"demo_{secrets.token_urlsafe(24)}", True, "Demo API token"),
        DemoKey("DEBUG", "true", False, "Not a secret: shown in the clear"),
    ]


def _demo_password(data_dir: Path) -> str:
    path = data_dir / DEMO_FILE
    if path.is_file():
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["password"])
        except (ValueError, KeyError, TypeError):
            message = f"envcat: {path} is damaged; remove it to make a new demo password"
            raise OpsError(message) from None
    password = secrets.token_urlsafe(12)
    write_private_file(path, json.dumps({"email": DEMO_EMAIL, "password": password}) + "\n")
    return password


def _fail(response: httpx.Response) -> OpsError:
    try:
        code = response.json().get("error", "")
    except ValueError:
        code = ""
    request = response.request
    return OpsError(
        f"envcat: demo setup failed: {request.method} {request.url.path} "
        f"answered {response.status_code} {code}".rstrip()
    )


def _expect(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise _fail(response)
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def _sign_up_or_in(client: httpx.Client, secret: str, password: str) -> dict[str, Any]:
    bff = HmacAuth(secret, BFF_SIGNER)
    credentials = {"email": DEMO_EMAIL, "password": password}
    response = client.post(_SIGN_UP, json=credentials, auth=bff)
    if response.status_code == httpx.codes.FORBIDDEN:
        raise OpsError("envcat: --demo needs ALLOW_SIGNUP=true (sign-up is disabled)")
    if response.status_code != httpx.codes.CONFLICT:
        return _expect(response, httpx.codes.CREATED)
    response = client.post(_SIGN_IN, json=credentials, auth=bff)
    if response.status_code == httpx.codes.UNAUTHORIZED:
        raise OpsError(
            f"envcat: {DEMO_EMAIL} exists with another password than the one in {DEMO_FILE}; "
            "remove the data directory to start afresh"
        )
    return _expect(response, httpx.codes.OK)


def _find_by_name(client: httpx.Client, auth: HmacAuth, collection: str, name: str) -> str | None:
    """The id of the bundle or key called exactly `name` (`?q=` matches substrings)."""
    path = f"/api/v1/{collection}"
    listing = _expect(client.get(path, params={"q": name}, auth=auth), httpx.codes.OK)
    items: list[dict[str, Any]] = listing[collection]
    return next((str(item["id"]) for item in items if item["name"] == name), None)


def _ensure_bundle(client: httpx.Client, auth: HmacAuth) -> dict[str, Any]:
    bundle_id = _find_by_name(client, auth, "bundles", DEMO_BUNDLE)
    if bundle_id is None:
        body = {"name": DEMO_BUNDLE, "description": "Created by envcat server up --demo"}
        return _expect(client.post("/api/v1/bundles", json=body, auth=auth), httpx.codes.CREATED)
    return _expect(client.get(f"/api/v1/bundles/{bundle_id}", auth=auth), httpx.codes.OK)


def _ensure_keys(client: httpx.Client, auth: HmacAuth, bundle: dict[str, Any]) -> None:
    attached = {key["name"] for key in bundle["keys"]}
    path = f"/api/v1/bundles/{bundle['id']}/keys"
    for key in demo_keys():
        if key.name in attached:
            continue
        body = {
            "name": key.name,
            "value": key.value,
            "is_secret": key.is_secret,
            "description": key.description,
        }
        response = client.post(path, json=body, auth=auth)
        if response.status_code == httpx.codes.CONFLICT:
            # In the library already but not attached: attach the existing key.
            key_id = _find_by_name(client, auth, "keys", key.name)
            response = client.post(path, json={"key_id": key_id}, auth=auth)
        _expect(response, httpx.codes.CREATED)


def ensure_demo(api_url: str, secret: str, data_dir: Path) -> DemoAccount:
    """Create (or find) the demo account, its `demo/app` bundle and keys; return the account."""
    password = _demo_password(data_dir)
    try:
        with httpx.Client(base_url=api_url, timeout=API_TIMEOUT) as client:
            identity = _sign_up_or_in(client, secret, password)
            user_id, tenant_id = str(identity["user"]["id"]), str(identity["tenant"]["id"])
            workspace = str(identity["tenant"].get("slug") or "")
            auth = HmacAuth(secret, Signer(user_id, tenant_id))
            bundle = _ensure_bundle(client, auth)
            _ensure_keys(client, auth, bundle)
    except httpx.HTTPError as exc:
        raise OpsError(f"envcat: demo setup failed: {type(exc).__name__} calling the api") from None
    return DemoAccount(DEMO_EMAIL, password, user_id, tenant_id, str(bundle["id"]), workspace)
