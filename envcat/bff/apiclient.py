"""The bff's one pooled HTTP client to the api, and the HMAC signer of DESIGN §5.

The bff never touches the database: every read and write is an HTTP call to
the api, signed for the caller's user and tenant (or for the bff's own
identity on the internal endpoints).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from envcat.core import signing
from envcat.core.logging import REQUEST_ID_HEADER

# The api caps a long poll at 30 s; reads must outlive it.
LONG_POLL_CAP_SECONDS = 30
TIMEOUT = httpx.Timeout(connect=5.0, read=LONG_POLL_CAP_SECONDS + 15.0, write=15.0, pool=10.0)
# Under gevent one process holds many waiting CLIs, each on its own upstream connection.
LIMITS = httpx.Limits(max_connections=2000, max_keepalive_connections=100, keepalive_expiry=30)


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


@dataclass(frozen=True)
class CallerInfo:
    """The browser-side facts the api needs for rate limits, audit and log correlation."""

    client_ip: str | None
    user_agent: str | None
    request_id: str | None


class ApiClient:
    """A pooled httpx.Client on API_BASE_URL with explicit timeouts."""

    def __init__(
        self,
        base_url: str,
        secret: str,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._secret = secret
        self._client = httpx.Client(
            base_url=base_url,
            timeout=TIMEOUT,
            limits=LIMITS,
            transport=transport,
            follow_redirects=False,
        )

    def send(
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
    ) -> httpx.Response:
        """Make one call; signed when `signer` is given. Raise ApiUnavailable on network errors."""
        all_headers = dict(headers or {})
        if caller.client_ip:
            all_headers["X-Forwarded-For"] = caller.client_ip
        if caller.user_agent:
            all_headers["User-Agent"] = caller.user_agent
        if caller.request_id:
            all_headers[REQUEST_ID_HEADER] = caller.request_id
        auth = HmacAuth(self._secret, signer) if signer is not None else None
        try:
            return self._client.request(
                method,
                path,
                params=params,
                json=json,
                content=content,
                headers=all_headers,
                auth=auth,
            )
        except httpx.TimeoutException:
            raise ApiUnavailable(502, "The api did not answer in time.") from None
        except httpx.TransportError:
            raise ApiUnavailable(503, "The api is unreachable.") from None

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()
