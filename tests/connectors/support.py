"""Stand-ins for what lives outside this machine: AWS (moto in server mode, the real wire
protocol through boto3) behind a loopback proxy that counts calls per second and can inject
ThrottlingException and latency, and helpers to seed EnvCat rows through the services."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
from sqlalchemy import select

from envcat.core.schemas.bundles import BundleCreate, CreateAndAttachKey
from envcat.core.schemas.connectors import ConnectionCreate, LinkCreate
from envcat.models import BundleKey, Key, Link, db
from envcat.services import bundles, keys
from envcat.services.connectors import connections, links
from envcat.services.tenancy import Actor
from tests.support import free_port, serve_in_background
from tests.support.signed import add_member

REGION = "eu-west-1"
ACCESS_KEY_ID = "AKIAENVCATTEST000001"
SECRET_ACCESS_KEY = "test-secret-access-key-0000000000000000"  # moto's, not AWS's
WRITES = frozenset({"CreateSecret", "PutSecretValue", "UpdateSecret"})


@dataclass
class ProviderProxy:
    """A loopback HTTP proxy in front of moto that sees every call a worker makes."""

    upstream: str
    port: int = field(default_factory=free_port)
    latency: float = 0.0
    throttle_writes: int = 0  # answer the next N writes with ThrottlingException
    fail_writes: int = 0  # answer the next N writes with a 500 InternalFailure
    calls: list[tuple[float, str, str]] = field(default_factory=list)  # (time, action, key id)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _upstream: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def actions(self) -> Counter[str]:
        with self._lock:
            return Counter(action for _, action, _ in self.calls)

    def peak_per_second(self, actions: frozenset[str] = WRITES) -> int:
        """The most calls of `actions` seen in one wall-clock second."""
        with self._lock:
            seconds = Counter(int(at) for at, action, _ in self.calls if action in actions)
        return max(seconds.values(), default=0)

    def start(self) -> None:
        proxy, client = self, httpx.Client(base_url=self.upstream, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                auth = self.headers.get("Authorization", "")
                key_id = auth.split("Credential=", 1)[-1].split("/", 1)[0] if auth else ""
                with proxy._lock:
                    proxy.calls.append((time.time(), action, key_id))
                    throttle = action in WRITES and proxy.throttle_writes > 0
                    if throttle:
                        proxy.throttle_writes -= 1
                    fail = not throttle and action in WRITES and proxy.fail_writes > 0
                    if fail:
                        proxy.fail_writes -= 1
                if fail:
                    self._answer(
                        500,
                        {"x-amzn-ErrorType": "InternalFailure"},
                        json.dumps({"__type": "InternalFailure", "message": "oops"}).encode(),
                    )
                    return
                if throttle:
                    self._answer(
                        400,
                        {"x-amzn-ErrorType": "ThrottlingException"},
                        json.dumps(
                            {"__type": "ThrottlingException", "message": "Rate exceeded"}
                        ).encode(),
                    )
                    return
                if proxy.latency:
                    time.sleep(proxy.latency)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                # One call at a time: moto's server is not thread-safe (concurrent
                # CreateSecret calls raised "dictionary changed size during iteration").
                with proxy._upstream:
                    reply = client.post(self.path, content=body, headers=headers)
                self._answer(reply.status_code, dict(reply.headers), reply.content)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                        "date",
                        "server",
                    ):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)  # the caller may be a worker we just SIGKILLed

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        serve_in_background(self._server)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def running_proxy(upstream: str) -> Iterator[ProviderProxy]:
    proxy = ProviderProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def aws(endpoint: str) -> Any:
    """A boto3 client straight to moto (the test's own view of the provider)."""
    return boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def owner(tenant_id: str = "t-conn", user_id: str = "u-conn") -> Actor:
    add_member(user_id, tenant_id, "owner")
    return Actor(tenant_id=tenant_id, user_id=user_id)


def aws_connection(
    actor: Actor,
    endpoint: str,
    *,
    secret: str = SECRET_ACCESS_KEY,
    access_key_id: str = ACCESS_KEY_ID,
    name: str = "aws-test",
) -> str:
    body = ConnectionCreate.model_validate(
        {
            "name": name,
            "provider": "aws",
            "region": REGION,
            "endpoint_url": endpoint,
            "aws": {"access_key_id": access_key_id, "secret_access_key": secret},
        }
    )
    return connections.create(actor, body).id


def bundle_with(actor: Actor, name: str, values: dict[str, str]) -> str:
    bundle_id = bundles.create_bundle(actor, BundleCreate(name=name)).id
    for key, value in values.items():
        bundles.create_and_attach_key(actor, bundle_id, CreateAndAttachKey(name=key, value=value))
    return bundle_id


def link(actor: Actor, connection_id: str, bundle_id: str, **fields: Any) -> str:
    body = LinkCreate.model_validate(
        {"connection_id": connection_id, "bundle_id": bundle_id, **fields}
    )
    return links.create(actor, body).id


def link_row(link_id: str) -> Link:
    db.session.expire_all()
    row = db.session.get(Link, link_id)
    assert row is not None
    return row


def bundle_values(bundle_id: str) -> dict[str, str]:
    db.session.expire_all()
    rows = db.session.execute(
        select(BundleKey.alias, Key).join(Key).where(BundleKey.bundle_id == bundle_id)
    ).all()
    return {alias or key.name: keys.decrypt(key) for alias, key in rows}
