"""Test doubles for the CLI: an in-memory EnvCat public API, a fake clock, and an
HTTP server thread serving that API on 127.0.0.1 for subprocess tests.

The fake API implements the public endpoints of DESIGN.md §5 the way the real
server must: it derives the user code from the request id and the client's
public key, and seals a signed envelope (envcat/core/envelope.py, with a test
keyring) to that key with the real sealed box. Knobs let a test play an
impostor: sign with another keyring, seal bare values, or state other facts.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from nacl.public import PublicKey, SealedBox

from envcat.cli.runtime import Clock
from envcat.core.envelope import Envelope, SigningKeyring, encode_key, fingerprint, seal_envelope
from envcat.core.sealing import seal_values
from envcat.core.usercode import user_code
from envcat.core.wire import SERVER_KEY_PATH
from tests.support import serve_in_background

REQUESTS = "/api/v1/requests"
SERVER_SEED = bytes(range(32))
OTHER_SEED = bytes(range(100, 132))
NEW_SEED = bytes(range(200, 232))
WORKSPACE = "acme"
APPROVER = "alice@acme.dev"
DEFAULT_BUNDLE = "production/api"


def keyring(*seeds: bytes) -> SigningKeyring:
    """A signing keyring from fixed test seeds (primary first)."""
    return SigningKeyring(list(seeds))


def fingerprint_of(seed: bytes) -> str:
    """The fingerprint of the public key made from a test seed."""
    return fingerprint(keyring(seed).public_keys[0])


# A wait script item is a status word (see FakeApi._wait_reply) or an exception
# instance, raised by the MockTransport as if the network or the person did it.
Step = str | BaseException


@dataclass
class Call:
    """One request the fake API received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    """The public request API, scripted: `script` says what each `wait` answers."""

    values: dict[str, str] = field(default_factory=lambda: {"API_KEY": "s3cr3t"})
    script: list[Step] = field(default_factory=lambda: ["ready"])
    public_url: str = "http://envcat.test"
    interval: int = 5
    expires_in: int = 300
    wrong_user_code: bool = False
    created: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    wait_started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    # the delivery: signed by `signer` (the server's keyring unless an impostor's is set)
    signing: SigningKeyring = field(default_factory=lambda: keyring(SERVER_SEED))
    impostor: SigningKeyring | None = None
    unsigned: bool = False  # seal bare JSON values, as before issue #11
    workspaces: tuple[str, ...] = (WORKSPACE,)
    bundle_name: str | None = None  # None: the BUNDLE hint, else DEFAULT_BUNDLE
    tamper: dict[str, Any] = field(default_factory=dict)  # Envelope fields to override
    forge: dict[str, str] | None = None  # values swapped into the payload after signing
    busy_creates: int = 0  # this many creates answer 503 busy first (issue #22)
    busy_retry_after: str = "5"
    workload_mode: str | None = None  # answer as for an ID token or service token (#16)

    def calls_to(self, method: str, suffix: str = "") -> list[Call]:
        """Return the recorded calls with this method whose path ends with `suffix`."""
        return [c for c in self.calls if c.method == method and c.path.endswith(suffix)]

    def handle(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        """Answer one call: (status, headers, body)."""
        self.calls.append(call)
        if call.method == "POST" and call.path == REQUESTS:
            return self._create(call.body)
        if call.method == "GET" and call.path == SERVER_KEY_PATH:
            return self._server_key()
        if not self.created or not call.path.startswith(f"{REQUESTS}/{self.created['id']}"):
            return _json(404, {"error": "not_found", "message": "Unknown request."})
        if call.headers.get("x-poll-token") != self.created["poll_token"]:
            return _json(401, {"error": "invalid_poll_token", "message": "Bad poll token."})
        if call.method == "DELETE":
            return 204, {}, b""
        self.wait_started.set()
        step = self.script.pop(0) if self.script else "pending"
        if isinstance(step, BaseException):
            raise step
        return self._wait_reply(step, float(call.query.get("timeout", "0")))

    def _server_key(self) -> tuple[int, dict[str, str], bytes]:
        keys = [
            {"public_key": encode_key(key), "fingerprint": fingerprint(key)}
            for key in (self.impostor or self.signing).public_keys
        ]
        return _json(200, {**keys[0], "keys": keys})

    def envelope(self) -> Envelope:
        """The statement the fake server signs for the current request."""
        signer = self.impostor or self.signing
        statement = Envelope(
            request_id=self.created["id"],
            cli_public_key=self.created["client_pubkey"],
            workspace_id="ws_1",
            workspace_slug=self.created["workspace"],
            bundle_id="b_1",
            bundle_name=self.bundle_name or self.created.get("bundle") or DEFAULT_BUNDLE,
            approver_id="u_1",
            approver_email=APPROVER,
            approved_at=time.time(),
            keys=self.values,
            server_keys=[encode_key(key) for key in signer.public_keys],
        )
        return dataclasses.replace(statement, **self.tamper)

    def _sealed(self) -> bytes:
        if self.unsigned:
            return seal_values(self.created["client_pubkey"], self.values)
        statement = self.envelope()
        signer = self.impostor or self.signing
        if self.tamper.get("cli_public_key") is None and self.forge is None:
            return seal_envelope(statement, signer)  # the production path
        # sealed to the terminal's real key whatever the statement says
        signatures = signer.sign(statement.to_payload())
        if self.forge is not None:  # a man in the middle's edit after signing
            statement = dataclasses.replace(statement, keys=self.forge)
        payload = base64.b64encode(statement.to_payload()).decode()
        document = {"v": 1, "payload": payload, "sigs": signatures}
        recipient = PublicKey(base64.b64decode(self.created["client_pubkey"]))
        return bytes(SealedBox(recipient).encrypt(json.dumps(document).encode()))

    def _create(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if self.busy_creates > 0:
            self.busy_creates -= 1
            message = "EnvCat is busy: 2000 approvals are waiting for a worker."
            reply = _json(503, {"error": "busy", "message": message, "details": 5})
            return reply[0], {**reply[1], "Retry-After": self.busy_retry_after}, reply[2]
        if body.get("workspace") not in self.workspaces:
            return _json(404, {"error": "unknown_workspace", "message": "No such workspace."})
        request_id = secrets.token_urlsafe(16)
        public_key = body["client_pubkey"]
        code = user_code(request_id, public_key)
        self.created = {
            "id": request_id,
            "poll_token": secrets.token_urlsafe(24),
            "user_code": "BBBB-BBBB" if self.wrong_user_code else code,
            "verification_uri": f"{self.public_url}/approve",
            "verification_uri_complete": f"{self.public_url}/approve/{request_id}",
            "interval": self.interval,
            "expires_in": self.expires_in,
            "client_pubkey": public_key,
            "workspace": body["workspace"],
            "bundle": body.get("bundle"),
        }
        private = ("client_pubkey", "workspace", "bundle")
        created = {k: v for k, v in self.created.items() if k not in private}
        if self.workload_mode is not None:
            created.update(workload_mode=self.workload_mode, workload="workload:github:acme/api@x")
        return _json(201, created)

    def _wait_reply(self, step: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
        if step == "hold":  # a real long poll: answer pending after `timeout` s
            self.release.wait(timeout)
            return _json(200, {"status": "pending"})
        if step == "ready":
            ciphertext = base64.b64encode(self._sealed()).decode("ascii")
            return _json(200, {"status": "ready", "ciphertext_base64": ciphertext})
        if step == "html500":
            return 500, {"Content-Type": "text/html"}, b"<html><h1>Internal Server Error</h1>"
        if step == "rate_limited":
            return _json(429, {"error": "rate_limited", "message": "Slow."}, {"Retry-After": "7"})
        return _json(*_CANNED[step])


_CANNED: dict[str, tuple[int, dict[str, Any]]] = {
    "pending": (200, {"status": "pending"}),
    "denied": (200, {"status": "denied"}),
    "failed": (200, {"status": "failed", "message": "Key STRIPE_KEY no longer decrypts."}),
    "expired": (410, {"error": "expired_token", "message": "Expired."}),
    "slow_down": (400, {"error": "slow_down", "message": "Poll less often."}),
    "bad_token": (401, {"error": "invalid_poll_token", "message": "Bad poll token."}),
    "bad_ciphertext": (200, {"status": "ready", "ciphertext_base64": "AAAA"}),
    "json502": (502, {"error": "bad_gateway", "message": "The api is down."}),
}


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


def mock_client(api: FakeApi) -> httpx.Client:
    """Return an httpx.Client whose MockTransport is answered by `api`."""

    def respond(request: httpx.Request) -> httpx.Response:
        query = {k: v for k, v in request.url.params.items()}
        body = json.loads(request.content) if request.content else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        call = Call(request.method, request.url.path, query, headers, body)
        status, reply_headers, content = api.handle(call)
        return httpx.Response(status, headers=reply_headers, content=content)

    return httpx.Client(transport=httpx.MockTransport(respond), base_url=api.public_url)


class FakeClock:
    """Monotonic time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds

    def clock(self) -> Clock:
        return Clock(monotonic=self.monotonic, sleep=self.sleep)


def _handler_for(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            call = Call(self.command, url.path, query, headers, json.loads(raw) if raw else None)
            status, reply_headers, content = api.handle(call)
            with contextlib.suppress(ConnectionError):  # the CLI may have been interrupted
                self.send_response(status)
                for name, value in reply_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


@contextmanager
def serve(api: FakeApi) -> Iterator[str]:
    """Serve `api` over HTTP on 127.0.0.1 in a thread; yield its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(api))
    server.daemon_threads = True
    thread = serve_in_background(server)
    api.public_url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield api.public_url
    finally:
        api.release.set()
        server.shutdown()
        server.server_close()
        thread.join()
