"""The approval flow over real HTTP, for fault tests and benchmarks.

An `Owner` signs its calls to the api exactly as the bff does (`HmacAuth`); a
`CliRun` is the real `envcat get` console script in a subprocess, whose request
id is read from the approval URL it prints on stderr.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from envcat.bff.apiclient import BFF_SIGNER, HmacAuth, Signer
from tests.hardening.processes import cli_argv

APPROVAL_URL = re.compile(r"/approve/([A-Za-z0-9_-]{16,128})")


def signed_client(api_url: str, secret: str, signer: Signer, timeout: float = 30.0) -> httpx.Client:
    """An httpx client to the api that signs every call for `signer`."""
    return httpx.Client(base_url=api_url, auth=HmacAuth(secret, signer), timeout=timeout)


@dataclass
class Owner:
    """A local account, owner of its personal tenant, calling the api directly."""

    user_id: str
    tenant_id: str
    client: httpx.Client
    workspace: str = ""  # the slug a CLI names the tenant by

    def create_bundle(self, name: str, values: dict[str, str]) -> str:
        """Create a bundle holding `values` (created in the library); return its id."""
        reply = self.client.post("/api/v1/bundles", json={"name": name})
        assert reply.status_code == 201, reply.text
        bundle_id: str = reply.json()["id"]
        for key, value in values.items():
            added = self.client.post(
                f"/api/v1/bundles/{bundle_id}/keys", json={"name": key, "value": value}
            )
            assert added.status_code == 201, added.text
        return bundle_id

    def approve(self, request_id: str, bundle_id: str, names: list[str]) -> httpx.Response:
        """Approve a request for the given keys of the bundle (202 when accepted)."""
        return self.client.post(
            f"/api/v1/requests/{request_id}/encrypt-from-bundle",
            json={"bundle_id": bundle_id, "include_keys": names},
        )


def sign_up_owner(api_url: str, secret: str) -> Owner:
    """Create a local account through the internal endpoint, as the bff's sign-up form does."""
    email = f"owner-{uuid.uuid4().hex[:10]}@example.test"
    with signed_client(api_url, secret, BFF_SIGNER) as bff:
        reply = bff.post(
            "/api/v1/internal/local-auth/sign-up",
            json={"email": email, "password": "correct horse battery staple"},
        )
    assert reply.status_code == 201, reply.text
    account: dict[str, Any] = reply.json()
    user_id, tenant_id = account["user"]["id"], account["tenant"]["id"]
    client = signed_client(api_url, secret, Signer(user_id, tenant_id))
    return Owner(user_id, tenant_id, client, account["tenant"]["slug"])


@dataclass
class CliRun:
    """`envcat get … --format json` running in a subprocess."""

    process: subprocess.Popen[bytes]
    stderr_lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, server: str, *extra: str, env: dict[str, str]) -> CliRun:
        """Start the CLI against `server` and read its stderr in the background."""
        argv = cli_argv("get", "--server", server, "--format", "json", "--no-qr", *extra)
        process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        run = cls(process)
        run._reader = threading.Thread(target=run._read_stderr, daemon=True)
        run._reader.start()
        return run

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr_lines.append(raw.decode("utf-8", "replace"))

    def request_id(self, timeout: float = 30.0) -> str:
        """The id in the approval URL the CLI printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := APPROVAL_URL.search("".join(self.stderr_lines)):
                return found.group(1)
            assert self.process.poll() is None, "".join(self.stderr_lines)
            time.sleep(0.05)
        raise AssertionError("the CLI printed no approval URL")

    def stop(self) -> None:
        """Terminate the CLI if it still runs (the test failed early) and close its pipes."""
        if self.process.returncode is None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def finish(self, timeout: float = 60.0) -> tuple[int, dict[str, str] | None, str]:
        """Wait for the exit; return (exit code, the JSON values or None, stderr)."""
        assert self.process.stdout is not None
        stdout = self.process.stdout.read()
        code = self.process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        values = json.loads(stdout) if code == 0 else None
        return code, values, "".join(self.stderr_lines)


_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class BffSession:
    """A person in a browser without JavaScript: a bff session cookie and its CSRF token."""

    client: httpx.Client
    csrf: str = ""

    @classmethod
    def sign_up(cls, bff_url: str, email: str, password: str) -> BffSession:
        """Create a local account with the sign-up form, then sign it in with the sign-in form."""
        with httpx.Client(base_url=bff_url, timeout=30.0) as client:
            form = cls(client)
            form.csrf = form._csrf_of("/sign-up")
            reply = form.form("/sign-up", {"email": email, "password": password})
            assert reply.status_code == 302, reply.text
        return cls.sign_in(bff_url, email, password)

    @classmethod
    def sign_in(cls, bff_url: str, email: str, password: str) -> BffSession:
        """Sign an existing local account in with the sign-in form."""
        session = cls(httpx.Client(base_url=bff_url, timeout=30.0))
        session.csrf = session._csrf_of("/sign-in")
        reply = session.form("/sign-in", {"email": email, "password": password})
        assert reply.status_code == 302, reply.text
        session.csrf = session._csrf_of("/bundles")
        return session

    def clone(self) -> BffSession:
        """The same signed-in session on a client of its own (one per thread)."""
        client = httpx.Client(
            base_url=self.client.base_url, timeout=30.0, cookies=self.client.cookies
        )
        return BffSession(client, self.csrf)

    def _csrf_of(self, page: str) -> str:
        found = _CSRF_FIELD.search(self.client.get(page).text)
        assert found is not None, f"no CSRF field on {page}"
        return found.group(1)

    def form(self, path: str, data: dict[str, Any]) -> httpx.Response:
        """POST a form of ours, with the CSRF token."""
        return self.client.post(path, data={**data, "csrf_token": self.csrf})

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Call `/api/v1/…` through the bff's proxy, as the web UI's scripts do."""
        return self.client.request(method, path, json=body, headers={"X-CSRF-Token": self.csrf})
