"""A live EnvCat stack on loopback for end-to-end tests: real api, worker and bff.

    with live_stack(database_url, redis_url, broker_url) as stack:
        stack.sign_up("ada@example.test", "correct horse battery")
        httpx.get(f"{stack.bff_url}/healthz")

The api and the bff each run on a threaded werkzeug server in a thread, the
Celery worker in another (solo pool, all three queues), all built from one
Settings whose API_BASE_URL points at the api thread and PUBLIC_URL at the bff.
Run one stack at a time in a process: Celery's worker state is process-global,
and two test workers in one process do not shut down cleanly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from celery.contrib.testing.worker import start_worker
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from envcat.bff.apiclient import BFF_SIGNER, HmacAuth, Signer
from envcat.bff.runtime import EXTENSION_KEY, BffRuntime
from envcat.core.settings import Settings
from envcat.services.runtime import EXTENSION_KEY as RUNTIME_KEY
from envcat.workers.factory import QUEUES
from tests.support import SHUTDOWN_POLL_SECONDS, free_port, wait_for_port
from tests.support.databases import migrated

HOST = "127.0.0.1"


@dataclass
class LiveStack:
    """URLs and helpers of a running stack."""

    api_url: str
    bff_url: str
    settings: Settings
    api_app: Flask
    bff_app: Flask

    @property
    def secret(self) -> str:
        return self.settings.bff_shared_secret.get_secret_value()

    def signed(self, user_id: str, tenant_id: str) -> httpx.Client:
        """An httpx client to the api that signs every call for `user_id` in `tenant_id`."""
        return httpx.Client(
            base_url=self.api_url,
            auth=HmacAuth(self.secret, Signer(user_id, tenant_id)),
            timeout=45.0,
        )

    def sign_up(self, email: str, password: str) -> dict[str, Any]:
        """Create a local account through the api's internal endpoint; return its JSON.

        No browser session is made: `{"user", "tenant", "role"}` only.
        """
        with self.signed(BFF_SIGNER.user_id, BFF_SIGNER.tenant_id) as client:
            reply = client.post(
                "/api/v1/internal/local-auth/sign-up", json={"email": email, "password": password}
            )
        if reply.status_code != 201:
            raise AssertionError(f"sign-up failed: {reply.status_code} {reply.text}")
        data: dict[str, Any] = reply.json()
        return data

    def browser(self) -> httpx.Client:
        """An httpx client to the bff that keeps cookies, like a browser without JavaScript."""
        return httpx.Client(base_url=self.bff_url, timeout=45.0, follow_redirects=False)


def runtime_of(bff_app: Flask) -> BffRuntime:
    """The bff's per-process resources (its api client and Redis pool)."""
    runtime: BffRuntime = bff_app.extensions[EXTENSION_KEY]
    return runtime


class _ServerThread:
    """A threaded werkzeug server for one WSGI app, stopped by its owner."""

    def __init__(self, app: Flask, port: int) -> None:
        self.server: BaseWSGIServer = make_server(HOST, port, app, threaded=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            daemon=True,
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@contextlib.contextmanager
def live_stack(
    database_url: str,
    redis_url: str,
    broker_url: str | None,
    *,
    public_host: str = HOST,
    **overrides: Any,
) -> Iterator[LiveStack]:
    """Run the real api, a real Celery worker and the real bff until the block ends.

    `public_host` names the bff in PUBLIC_URL: `localhost` for WebAuthn, which takes
    no IP address as a relying party id (issue #20).
    """
    from envcat.api import create_app as create_api
    from envcat.bff import create_app as create_bff
    from tests.support.settings import make_settings

    api_port, bff_port = free_port(), free_port()
    values: dict[str, object] = {
        "api_base_url": f"http://{HOST}:{api_port}",
        "public_url": f"http://{public_host}:{bff_port}",
    }
    values.update(overrides)
    settings = make_settings(database_url, redis_url, broker_url, **values)
    migrated(settings.database_url)
    api_app = create_api(settings)
    bff_app = create_bff(settings)
    servers = [_ServerThread(api_app, api_port), _ServerThread(bff_app, bff_port)]
    with contextlib.ExitStack() as stack:
        stack.callback(runtime_of(bff_app).close)
        stack.callback(api_app.extensions[RUNTIME_KEY].wakeups.close)  # after the servers
        for server in servers:
            server.start()
            stack.callback(server.stop)
        stack.enter_context(
            start_worker(
                api_app.extensions["celery"],
                pool="solo",
                concurrency=1,
                queues=list(QUEUES),
                perform_ping_check=False,
                shutdown_timeout=30,
            )
        )
        wait_for_port(api_port)
        wait_for_port(bff_port)
        yield LiveStack(
            api_url=f"http://{HOST}:{api_port}",
            bff_url=f"http://{HOST}:{bff_port}",
            settings=settings,
            api_app=api_app,
            bff_app=bff_app,
        )
