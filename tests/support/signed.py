"""Call the api as the bff does: every request HMAC-signed for a user and tenant."""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from envcat.core import signing
from envcat.models import Membership, Tenant, User, db


@dataclass
class SignedClient:
    """Signs each call to a Flask test client with BFF_SHARED_SECRET."""

    client: FlaskClient
    secret: str
    user_id: str
    tenant_id: str

    def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        body = (
            data
            if data is not None
            else (b"" if json is None else jsonlib.dumps(json).encode("utf-8"))
        )
        parts = urlsplit(path)
        signed = signing.sign_headers(
            self.secret, self.user_id, self.tenant_id, method, parts.path, parts.query, body
        )
        all_headers = {**signed, **(headers or {})}
        if json is not None:
            all_headers.setdefault("Content-Type", "application/json")
        return self.client.open(path, method=method, data=body, headers=all_headers)

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.call("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> TestResponse:
        return self.call("POST", path, json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> TestResponse:
        return self.call("PATCH", path, json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> TestResponse:
        return self.call("PUT", path, json, **kw)

    def delete(self, path: str, **kw: Any) -> TestResponse:
        return self.call("DELETE", path, **kw)


def add_member(
    user_id: str,
    tenant_id: str,
    role: str = "owner",
    *,
    email: str | None = None,
    kind: str = "personal",
) -> None:
    """Create (if needed) a user and a tenant and give the user `role` in it."""
    if db.session.get(Tenant, tenant_id) is None:
        db.session.add(Tenant(id=tenant_id, name=tenant_id, kind=kind))
    if db.session.get(User, user_id) is None:
        db.session.add(User(id=user_id, email=email or f"{user_id}@example.test", name=user_id))
    db.session.flush()
    membership = db.session.get(Membership, (user_id, tenant_id))
    if membership is None:
        db.session.add(Membership(user_id=user_id, tenant_id=tenant_id, role=role))
    else:
        membership.role = role
    db.session.commit()


def member_client(app: Flask, user_id: str, tenant_id: str, role: str = "owner") -> SignedClient:
    """A SignedClient on `app` for a user given `role` in the tenant (both created if needed)."""
    add_member(user_id, tenant_id, role)
    secret = app.extensions["envcat"].settings.bff_shared_secret.get_secret_value()
    return SignedClient(app.test_client(), secret, user_id, tenant_id)
