"""The bff's one pooled HTTP client to the api, and the HMAC signer of DESIGN §5.

The bff never touches the database: every read and write is an HTTP call to
the api, signed for the caller's user and tenant (or for the bff's own
identity on the internal endpoints).
"""

from __future__ import annotations

import functools
import http.client
import json as jsonlib
import logging
import select
import socket
import ssl
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, overload
from urllib.parse import unquote, urlencode, urlsplit

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from envcat.bff import metrics
from envcat.core import signing, tracing
from envcat.core.wire import MAX_WAIT_SECONDS, REQUEST_ID_HEADER

log = logging.getLogger("envcat.bff")

# Reads must outlive the api's longest long poll.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = MAX_WAIT_SECONDS + 15.0
# Under gevent one process holds many waiting CLIs, each on its own upstream connection
# while it waits; afterwards at most this many stay open for reuse.
MAX_IDLE_CONNECTIONS = 100
# Well under the api's keep-alive (75 s, envcat/api/gunicorn.conf.py), so the api never
# closes a connection we are about to reuse.
KEEPALIVE_EXPIRY_SECONDS = 30.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The httpx path (an explicit transport: tests and tools).
TIMEOUT = httpx.Timeout(
    connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS, write=15.0, pool=10.0
)
LIMITS = httpx.Limits(
    max_connections=2000,
    max_keepalive_connections=MAX_IDLE_CONNECTIONS,
    keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
)


@dataclass(frozen=True)
class Signer:
    """Who a call is signed for: a user in a tenant, or the bff itself."""

    user_id: str
    tenant_id: str


BFF_SIGNER = Signer(signing.BFF_USER_ID, signing.NO_TENANT)


class HmacAuth(httpx.Auth):
    """Sign each request with a fresh timestamp and nonce over its exact method, path and body."""

    requires_request_body = True

    def __init__(self, secret: str, signer: Signer) -> None:
        self._secret = secret
        self._signer = signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the five signature headers and send."""
        request.headers.update(
            signing.sign_headers(
                self._secret,
                self._signer.user_id,
                self._signer.tenant_id,
                request.method,
                request.url.path,
                request.url.query.decode("ascii"),
                request.content,
            )
        )
        yield request


class ApiUnavailable(Exception):
    """The api could not be reached or failed; the bff answers 502/503."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


MALFORMED_REPLY = "The api sent a reply EnvCat could not read; retry in a moment."
Reply = TypeVar("Reply", bound=BaseModel)
Shape = TypeVar("Shape")


@overload
def reply_as(model: type[Reply], response: httpx.Response) -> Reply: ...
@overload
def reply_as(model: TypeAdapter[Shape], response: httpx.Response) -> Shape: ...
def reply_as(model: type[BaseModel] | TypeAdapter[Any], response: httpx.Response) -> Any:
    """A successful api reply parsed into the `core.schemas` model the api built it from
    (a TypeAdapter for a reply that is one of several models).

    The one door through which the bff reads an api reply (issue #13): pages and
    templates get typed objects, and a reply of another shape is the api failing,
    a 502, never a 500.
    """
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_json(response.content)
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        metrics.API_UNAVAILABLE.inc()
        # The reply's shape and how many fields broke, never the reply: it may hold a value.
        log.warning(
            "api reply of the wrong shape",
            extra={"model": exc.title, "errors": exc.error_count()},
        )
        raise ApiUnavailable(502, MALFORMED_REPLY) from None


_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def wire_time(value: object) -> object:
    """A time as the api wrote it (ISO 8601, `Z` for UTC); any other value unchanged.

    Pages, CSV cells and downloads show what the api sent, whether it arrived as
    text or was parsed into a `datetime` field of a reply model.
    """
    if isinstance(value, datetime):
        return _TIME.dump_python(value, mode="json")
    return value


@dataclass(frozen=True)
class CallerInfo:
    """The browser-side facts the api needs for rate limits, audit and log correlation."""

    client_ip: str | None
    user_agent: str | None
    request_id: str | None


@dataclass(frozen=True)
class Relayed:
    """An api reply as the proxy passes it on: status, header lines and body bytes.

    Lighter than an httpx.Response (which the proxy used to build and read back for
    every relayed call, issue #14): the body is never decoded or re-encoded.
    """

    status_code: int
    header_lines: list[tuple[str, str]]
    content: bytes

    @classmethod
    def of(cls, response: httpx.Response) -> Relayed:
        """The same reply, from an httpx.Response."""
        return cls(response.status_code, list(response.headers.items()), response.content)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        wanted = name.lower()
        return next((v for k, v in self.header_lines if k.lower() == wanted), None)

    def as_httpx(self) -> httpx.Response:
        """The same reply as an httpx.Response (what pages read)."""
        return httpx.Response(self.status_code, headers=self.header_lines, content=self.content)


Call = ParamSpec("Call")


def answering_httpx(relay: Callable[Call, Relayed]) -> Callable[Call, httpx.Response]:
    """`relay`'s call, answering with an httpx.Response instead of its `Relayed`."""

    @functools.wraps(relay)
    def send(*args: Call.args, **kwargs: Call.kwargs) -> httpx.Response:
        return relay(*args, **kwargs).as_httpx()

    return send


class _OneWrite:
    """Send a request's head and a bytes body in one write (http.client sends them apart).

    Two writes are two system calls and two loopback deliveries, on the bff and on the
    api, for every relayed request with a body (issue #14); a stream or chunked body
    keeps http.client's own way.
    """

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked:
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]  # mixin
            return
        buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]  # http.client's own
        buffer.extend((b"", b""))
        message = b"\r\n".join(buffer) + message_body
        del buffer[:]
        self.send(message)  # type: ignore[attr-defined]  # HTTPConnection.send


class _Connection(_OneWrite, http.client.HTTPConnection):
    """An HTTP/1.1 connection to the api that sends each request in one write."""


class _TlsConnection(_OneWrite, http.client.HTTPSConnection):
    """The same over TLS."""


class _Connections:
    """Idle HTTP/1.1 connections to one api origin, reused last in, first out.

    Taking and returning a connection costs O(1) whatever the number open. (httpx's
    pool scans every connection, and polls each one's socket, on every call and
    every release: with a thousand long polls open through one bff worker that scan
    made polls answer tens of seconds late; see docs/performance.md.)
    """

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.is_tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.is_tls else 80)
        self.prefix = parts.path.rstrip("/")
        self._tls = ssl.create_default_context() if self.is_tls else None
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._address: tuple[socket.AddressFamily, Any] | None = None

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection still open (True), else a new one (False)."""
        now = time.monotonic()
        while True:
            try:
                # list.pop and list.append are atomic (GIL), and no greenlet switch can
                # happen inside them: no lock needed, under threads or gevent.
                connection, since = self._idle.pop()
            except IndexError:
                return self._connect(), False
            if now - since < KEEPALIVE_EXPIRY_SECONDS and not _is_dropped(connection):
                return connection, True
            connection.close()

    def give_back(self, connection: http.client.HTTPConnection) -> None:
        """Keep `connection` for the next call, unless MAX_IDLE_CONNECTIONS are kept already."""
        if len(self._idle) < MAX_IDLE_CONNECTIONS:  # a few more under a race: harmless
            self._idle.append((connection, time.monotonic()))
        else:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._tls is not None:
            connection = _TlsConnection(
                self.host, self.port, timeout=CONNECT_TIMEOUT_SECONDS, context=self._tls
            )
            connection.connect()
        else:
            connection = _Connection(self.host, self.port)
            connection.sock = self._open_socket()
        if connection.sock is not None:  # reads must outlive the longest poll
            connection.sock.settimeout(READ_TIMEOUT_SECONDS)
        return connection

    def _open_socket(self) -> socket.socket:
        """A TCP connection to the api, resolving its name once per process, not per call.

        Under gevent every lookup (even of an address literal) is a round trip
        through a thread pool; a burst of long polls opens hundreds of connections.
        A failed connect forgets the address, so a moved api is found again.
        """
        if self._address is None:
            found = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            self._address = (found[0][0], found[0][4])
        family, address = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT_SECONDS)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(address)
        except OSError:
            sock.close()
            self._address = None
            raise
        return sock

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.close()


def _is_dropped(connection: http.client.HTTPConnection) -> bool:
    """True when the api closed an idle connection (EOF, or bytes nobody asked for)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class ApiClient:
    """Pooled, signed calls to API_BASE_URL with explicit timeouts (connect 5 s, read 45 s).

    The calls go over the standard library's HTTP/1.1 client with our own O(1)
    keep-alive pool (about a fifth of httpx's CPU per call, which the bff's proxy
    path is mostly made of). A `transport` (tests, tools) routes them through an
    httpx.Client on it instead.
    """

    def __init__(
        self,
        base_url: str,
        secret: str,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._secret = secret
        self._base_url = base_url.rstrip("/")
        self._connections = _Connections(base_url) if transport is None else None
        self._client = (
            httpx.Client(
                base_url=base_url,
                timeout=TIMEOUT,
                limits=LIMITS,
                transport=transport,
                follow_redirects=False,
            )
            if transport is not None
            else None
        )

    def relay(
        self,
        method: str,
        path: str,
        *,
        signer: Signer | None,
        caller: CallerInfo,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Relayed:
        """Make one call; signed when `signer` is given. Raise ApiUnavailable on network errors.

        The reply comes as its bytes (what the proxy passes on); `send` makes the same
        call and answers with an httpx.Response (what pages read).
        """
        all_headers = dict(headers or {})
        if caller.client_ip:
            all_headers["X-Forwarded-For"] = caller.client_ip
        if caller.user_agent:
            all_headers["User-Agent"] = caller.user_agent
        if caller.request_id:
            all_headers[REQUEST_ID_HEADER] = caller.request_id
        if self._client is not None:
            return Relayed.of(
                self._send_httpx(method, path, signer, params, json, content, all_headers)
            )
        body = content if content is not None else b""
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
            all_headers["Content-Type"] = "application/json"
        raw_path, _, query = path.partition("?")
        if params:
            extra = urlencode(params)
            query = f"{query}&{extra}" if query else extra
        if signer is not None:
            # The api verifies over its decoded path and the raw query string.
            all_headers.update(
                signing.sign_headers(
                    self._secret,
                    signer.user_id,
                    signer.tenant_id,
                    method,
                    unquote(raw_path),
                    query,
                    body,
                )
            )
        target = f"{raw_path}?{query}" if query else raw_path
        # traceparent is added after signing: it is outside the signature (DESIGN §5).
        with tracing.client_call(method, raw_path, all_headers) as call:
            response = self._exchange(method, target, all_headers, body)
            call.finish(response.status_code)
        return response

    send = answering_httpx(relay)

    def _exchange(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Relayed:
        assert self._connections is not None  # noqa: S101  # send() checked
        prefix = self._connections.prefix
        for attempt in (1, 2):
            try:
                connection, reused = self._connections.take()
            except TimeoutError:
                raise ApiUnavailable(502, "The api did not answer in time.") from None
            except OSError:
                raise ApiUnavailable(503, "The api is unreachable.") from None
            try:
                connection.request(method, prefix + target, body=body or None, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
            except TimeoutError:
                connection.close()
                raise ApiUnavailable(502, "The api did not answer in time.") from None
            except (OSError, http.client.HTTPException):
                connection.close()
                # A kept-alive connection the api closed just now: say it again on a new
                # one, but only what is safe to repeat.
                if reused and attempt == 1 and method in IDEMPOTENT_METHODS:
                    continue
                raise ApiUnavailable(503, "The api is unreachable.") from None
            if reply.will_close:
                connection.close()
            else:
                self._connections.give_back(connection)
            return Relayed(reply.status, reply.getheaders(), data)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_httpx(
        self,
        method: str,
        path: str,
        signer: Signer | None,
        params: Mapping[str, str] | None,
        json: Any,
        content: bytes | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        assert self._client is not None  # noqa: S101  # send() checked
        auth = HmacAuth(self._secret, signer) if signer is not None else None
        try:
            return self._client.request(
                method,
                path,
                params=params,
                json=json,
                content=content,
                headers=headers,
                auth=auth,
            )
        except httpx.TimeoutException:
            raise ApiUnavailable(502, "The api did not answer in time.") from None
        except httpx.TransportError:
            raise ApiUnavailable(503, "The api is unreachable.") from None

    def close(self) -> None:
        """Close pooled connections."""
        if self._connections is not None:
            self._connections.close()
        if self._client is not None:
            self._client.close()
