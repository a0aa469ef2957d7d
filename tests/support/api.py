"""Helpers shared by the api tests: seeded rows and a CLI speaking to the api.

Seeds real rows through the models and the real keyring, and speaks to the api
as the CLI does (public endpoints) and as the bff does (signed endpoints).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import select
from werkzeug.test import TestResponse

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import AuditEvent, Bundle, BundleKey, Key, Tenant, db, new_uuid
from envcat.services.runtime import current
from tests.support.envelopes import open_delivery

REQUESTS = "/api/v1/requests"
WORKSPACE = "t-acme"  # the tenant most request tests approve in; its slug is its id


def ensure_workspace(tenant_id: str) -> None:
    """Create the tenant if missing (its slug is made from its id)."""
    if db.session.get(Tenant, tenant_id) is None:
        db.session.add(Tenant(id=tenant_id, name=tenant_id, kind="org"))
        db.session.commit()


@dataclass(frozen=True)
class SeedKey:
    """A key to create in a bundle: name, plaintext value, required?"""

    name: str
    value: str
    required: bool = False


def seed_bundle(tenant_id: str, name: str, keys: Sequence[SeedKey]) -> str:
    """Create a bundle holding `keys` (in this order) in the tenant; return its id."""
    if db.session.get(Tenant, tenant_id) is None:
        db.session.add(Tenant(id=tenant_id, name=tenant_id, kind="personal"))
        db.session.flush()
    bundle = Bundle(id=new_uuid(), tenant_id=tenant_id, name=name, description="", tags=[])
    db.session.add(bundle)
    keyring = current().keyring
    for position, spec in enumerate(keys):
        key_id = new_uuid()
        stored = keyring.encrypt(spec.value, tenant_id=tenant_id, key_id=key_id)
        db.session.add(Key(id=key_id, tenant_id=tenant_id, name=spec.name, value=stored))
        db.session.flush()
        db.session.add(
            BundleKey(bundle_id=bundle.id, key_id=key_id, position=position, required=spec.required)
        )
    db.session.commit()
    return bundle.id


def key_row(tenant_id: str, name: str) -> Key:
    """The library key `name` of the tenant."""
    return db.session.execute(
        select(Key).where(Key.tenant_id == tenant_id, Key.name == name)
    ).scalar_one()


def redis_dump(r: redis.Redis) -> str:
    """Every key and every value of the database, as one text to search."""
    parts: list[str] = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            value: Any = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        else:
            value = f"<{kind}>"
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)


def audit_actions(tenant_id: str) -> list[tuple[str, str]]:
    """(action, target) of the tenant's audit events, oldest first."""
    db.session.expire_all()
    rows = db.session.execute(
        select(AuditEvent.action, AuditEvent.target)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.id)
    ).all()
    return [(action, target) for action, target in rows]


@dataclass
class Cli:
    """One CLI run: a fresh keypair and, once created, its request id and poll token."""

    client: FlaskClient
    private_key: PrivateKey
    id: str = ""
    poll_token: str = ""
    created: dict[str, Any] | None = None

    @classmethod
    def start(cls, client: FlaskClient, workspace: str = WORKSPACE, **hints: Any) -> Cli:
        """Create a request for `workspace` as `envcat get` does; assert the 201."""
        ensure_workspace(workspace)
        cli = cls(client, generate_keypair())
        body = {"client_pubkey": cli.public_key, "workspace": workspace, **hints}
        response = client.post(REQUESTS, json=body)
        assert response.status_code == 201, response.get_json()
        cli.created = response.get_json()
        cli.id, cli.poll_token = cli.created["id"], cli.created["poll_token"]
        return cli

    @property
    def public_key(self) -> str:
        return encode_public_key(self.private_key)

    def wait(self, timeout: int = 0, token: str | None = None) -> TestResponse:
        headers = {"X-Poll-Token": self.poll_token if token is None else token}
        return self.client.get(f"{REQUESTS}/{self.id}/wait?timeout={timeout}", headers=headers)

    def cancel(self, token: str | None = None) -> TestResponse:
        headers = {"X-Poll-Token": self.poll_token if token is None else token}
        return self.client.delete(f"{REQUESTS}/{self.id}", headers=headers)

    def open(self, body: dict[str, Any]) -> dict[str, str]:
        """Open a ready reply's signed envelope with this CLI's private key; return the values."""
        return open_delivery(self.private_key, body["ciphertext_base64"])


def wait_until_final(cli: Cli, seconds: float = 20) -> TestResponse:
    """Long-poll until the request leaves `pending` (each poll blocks, no busy loop)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = cli.wait(timeout=5)
        if response.status_code != 200 or response.get_json()["status"] != "pending":
            return response
    raise AssertionError("the request stayed pending")
