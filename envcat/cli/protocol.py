"""The public request endpoints of DESIGN.md §5, as the CLI speaks them.

Every reply is checked before use: a non-JSON body, a 5xx or a malformed field
becomes one readable `CliError`, never a traceback. Server-supplied text is
cleaned before it reaches the terminal.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

import httpx

from envcat.cli.context import CLIENT
from envcat.cli.display import safe_text
from envcat.cli.errors import CliError, RequestDenied, RequestExpired, ServerUnreachable
from envcat.core.wire import MAX_WAIT_SECONDS, PATH_ID_RE, POLL_TOKEN_HEADER, SERVER_KEY_PATH

POLL_SECONDS = MAX_WAIT_SECONDS - 5  # each long poll asks for a little under the api's cap
TIMEOUT = httpx.Timeout(10.0, read=POLL_SECONDS + 20.0)
CANCEL_TIMEOUT = httpx.Timeout(3.0)
REQUESTS = "/api/v1/requests"
LOGINS = "/api/v1/logins"  # `envcat login` (issue #16): then waited on like any request
_INTERVAL_BOUNDS = (1.0, 60.0)


@dataclass(frozen=True)
class CreatedRequest:
    """The server's answer to `POST /requests`: what to show and how to poll."""

    id: str
    poll_token: str
    user_code: str
    verification_uri_complete: str
    interval: float
    expires_in: float
    workload_mode: str | None = None  # "automatic": a trust policy approved it (issue #16)
    workload: str | None = None
    workload_kind: str | None = None  # "grant": a device grant applies (issue #17)


@dataclass(frozen=True)
class Pending:
    """Not decided yet: poll again; k-of-n approvals so far, when the server says (issue #20)."""

    approvals: int | None = None
    approvals_required: int | None = None

    def progress(self) -> str:
        """'1 of 2 approvals', or "" when there is nothing to show."""
        have, need = self.approvals, self.approvals_required
        if have is None or need is None or need < 2:
            return ""
        return f"{have} of {need} approvals"


@dataclass(frozen=True)
class SlowDown:
    """RFC 8628 slow_down: add 5 s to the interval for good."""


@dataclass(frozen=True)
class RetryLater:
    """Rate-limited (429): wait `seconds` before the next poll."""

    seconds: float | None


@dataclass(frozen=True)
class Ready:
    """Approved: the values sealed to our public key."""

    ciphertext: bytes


@dataclass(frozen=True)
class ServerBusy:
    """502/503/504: the server or a service behind it is down for a moment; retry with backoff."""

    status: int


Outcome = Pending | SlowDown | RetryLater | ServerBusy | Ready


class ServerBusyCreating(ServerUnreachable):
    """503 busy on create: the server's approval workers are behind (issue #22); retry later.

    Exits like an unreachable server (5) when it stays busy: a CI job may retry later.
    """

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


BUSY_RETRY_SECONDS = 5.0
BUSY_RETRY_MAX_SECONDS = 30.0  # whatever Retry-After says: a server cannot park us for hours

# A restarting api or bff, or Redis down behind them: the request itself is still alive.
TRANSIENT_STATUSES = frozenset({502, 503, 504})


def make_client(server: str) -> httpx.Client:
    """Return the run's one HTTP client: base URL, explicit timeouts, our User-Agent."""
    return httpx.Client(base_url=server, timeout=TIMEOUT, headers={"User-Agent": CLIENT})


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def describe_failure(response: httpx.Response) -> str:
    """Return one line explaining an unexpected reply, with the server's own message."""
    location = response.headers.get("Location")
    if response.is_redirect and location:
        return (
            f"the server answered HTTP {response.status_code}, redirecting to "
            f"{safe_text(location, limit=200)}; pass that address as --server"
        )
    data = _json_object(response)
    if data is None:
        origin = f"{response.url.scheme}://{response.url.netloc.decode('ascii')}"
        return (
            f"the server answered HTTP {response.status_code} with a body that is not "
            f"EnvCat JSON; is {origin} an EnvCat server?"
        )
    code = safe_text(str(data.get("error", "error")), limit=60)
    message = " ".join(filter(None, [str(data.get("message") or ""), _field_errors(data)]))
    detail = f": {safe_text(message)}" if message else ""
    return f"the server answered HTTP {response.status_code} ({code}){detail}"


def _field_errors(data: dict[str, Any]) -> str:
    """Return a validation error's details as `(bundle: must be …; …)`, or ""."""
    details = data.get("details")
    if not isinstance(details, list):
        return ""
    parts = [
        f"{'.'.join(str(part) for part in item.get('loc') or [])}: {item.get('msg', '')}"
        for item in details[:3]
        if isinstance(item, dict)
    ]
    return f"({'; '.join(parts)})" if parts else ""


def describe_transport_error(exc: httpx.TransportError) -> str:
    """Return a short reason for a network failure (httpx messages can be empty)."""
    return safe_text(str(exc), limit=200) or type(exc).__name__


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Return the delay a 429 asks for (seconds or HTTP date), or None if absent or bad."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def create_request(
    client: httpx.Client,
    body: dict[str, Any],
    service_token: str | None = None,
    *,
    user_token: str | None = None,
    path: str = REQUESTS,
) -> CreatedRequest:
    """POST a new request; raise ServerUnreachable if the server cannot be reached.

    A service token (ENVCAT_TOKEN, issue #16), or else the terminal's `envcat login`
    token (the requester, issue #17), goes in this one call's Authorization header.
    `path` is `LOGINS` for `envcat login`.
    """
    bearer = service_token or user_token
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
    try:
        response = client.post(path, json=body, headers=headers)
    except httpx.TransportError as exc:
        server = str(client.base_url).rstrip("/")
        raise ServerUnreachable(
            f"cannot reach the EnvCat server at {server}: {describe_transport_error(exc)}"
        ) from None
    if response.status_code == 429:
        delay = retry_after_seconds(response)
        later = f"; try again in {delay:.0f} s" if delay is not None else ""
        raise CliError(f"the server is rate-limiting new requests{later}")
    if response.status_code == 503 and (_json_object(response) or {}).get("error") == "busy":
        delay = retry_after_seconds(response)
        wait = BUSY_RETRY_SECONDS if delay is None else min(delay, BUSY_RETRY_MAX_SECONDS)
        raise ServerBusyCreating(describe_failure(response), wait)
    if response.status_code == 404:
        data = _json_object(response) or {}
        if data.get("error") == "unknown_workspace":
            workspace = safe_text(str(body.get("workspace")), limit=80)
            raise CliError(
                f"the server has no workspace {workspace!r}; check --workspace, "
                "ENVCAT_WORKSPACE or .envcat.toml (the slug is shown in the web UI)"
            )
    if user_token and response.status_code == 401:  # issue #17: a revoked or expired sign-in
        raise CliError(
            "this terminal's sign-in was revoked or has expired: run envcat login again, "
            "or envcat logout to ask without it"
        )
    if (
        response.status_code == 403
        and (_json_object(response) or {}).get("error") == "members_only"
    ):
        # issue #17: the bundle is released only to terminals signed in as a member
        raise RequestDenied(
            "this bundle is released only to members of the workspace signed in on this "
            "terminal: run envcat login, then ask again"
        )
    if body.get("id_token") is not None or service_token:
        _refuse_workload(response)
    if response.status_code != 201:
        raise CliError(describe_failure(response))
    return _parse_created(_json_object(response))


def _refuse_workload(response: httpx.Response) -> None:
    """Turn the api's answers to an ID token into one readable line (issue #16)."""
    data = _json_object(response) or {}
    message = safe_text(str(data.get("message") or ""))
    if response.status_code == 401 and data.get("error") == "invalid_id_token":
        raise CliError(f"the server refused the ID token: {message}")
    if response.status_code == 401 and data.get("error") == "invalid_service_token":
        raise CliError(f"the server refused ENVCAT_TOKEN: {message}")
    if response.status_code == 403 and data.get("error") == "workload_not_allowed":
        raise CliError(f"not allowed: {message}")
    if response.status_code == 503 and data.get("error") == "issuer_unavailable":
        delay = retry_after_seconds(response)
        later = f"; retry in {delay:.0f} s" if delay is not None else ""
        raise ServerUnreachable(f"{message}{later}")


@dataclass(frozen=True)
class ServerKey:
    """The server's delivery signing key, as `GET /api/v1/server-key` states it."""

    public_key: bytes
    fingerprint: str
    all_fingerprints: tuple[str, ...]


def fetch_server_key(client: httpx.Client) -> ServerKey:
    """Fetch and check the server's public delivery key; CliError when malformed."""
    from envcat.core.envelope import EnvelopeError, decode_key, fingerprint

    try:
        response = client.get(SERVER_KEY_PATH)
    except httpx.TransportError as exc:
        server = str(client.base_url).rstrip("/")
        raise ServerUnreachable(
            f"cannot reach the EnvCat server at {server}: {describe_transport_error(exc)}"
        ) from None
    data = _json_object(response)
    if response.status_code != 200 or data is None:
        raise CliError(describe_failure(response))
    try:
        primary = decode_key(str(data.get("public_key", "")))
        others = [decode_key(str(item.get("public_key", ""))) for item in data.get("keys") or []]
    except (EnvelopeError, AttributeError):
        raise CliError("the server's key reply is malformed (public_key)") from None
    stated = data.get("fingerprint")
    if stated is not None and stated != fingerprint(primary):
        raise CliError("the server's key reply is inconsistent: its fingerprint does not match")
    return ServerKey(
        public_key=primary,
        fingerprint=fingerprint(primary),
        all_fingerprints=tuple(fingerprint(key) for key in others) or (fingerprint(primary),),
    )


def _parse_created(data: dict[str, Any] | None) -> CreatedRequest:
    if data is None:
        raise CliError("the server's reply to the new request is not a JSON object")
    text_fields = ("id", "poll_token", "user_code", "verification_uri_complete")
    missing = [name for name in text_fields if not isinstance(data.get(name), str)]
    interval, expires_in = data.get("interval", 5), data.get("expires_in")
    if missing or not (_is_number(interval) and _is_number(expires_in)):
        wrong = ", ".join(missing) or "interval/expires_in"
        raise CliError(f"the server's reply to the new request is malformed ({wrong})")
    if not PATH_ID_RE.fullmatch(data["id"]):
        raise CliError("the server sent a request id that is not URL-safe; refusing it")
    low, high = _INTERVAL_BOUNDS
    return CreatedRequest(
        id=data["id"],
        poll_token=data["poll_token"],
        user_code=data["user_code"],
        verification_uri_complete=data["verification_uri_complete"],
        interval=min(max(float(interval), low), high),
        expires_in=max(float(expires_in), 0.0),
        workload_mode=data["workload_mode"] if isinstance(data.get("workload_mode"), str) else None,
        workload=safe_text(data["workload"], 200)
        if isinstance(data.get("workload"), str)
        else None,
        workload_kind="grant" if data.get("grant_id") is not None else None,
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def wait_once(client: httpx.Client, request: CreatedRequest, timeout: int) -> Outcome:
    """Long-poll once; return what to do next or raise the final error.

    `httpx.TransportError` propagates: the caller retries those with backoff.
    """
    response = client.get(
        f"{REQUESTS}/{request.id}/wait",
        params={"timeout": timeout},
        headers={POLL_TOKEN_HEADER: request.poll_token},
    )
    data = _json_object(response)
    if response.status_code == 200 and data is not None:
        return _read_status(data)
    error = data.get("error") if data is not None else None
    if response.status_code == 400 and error == "slow_down":
        return SlowDown()
    if response.status_code == 429:
        return RetryLater(retry_after_seconds(response))
    if response.status_code in TRANSIENT_STATUSES:
        return ServerBusy(response.status_code)
    if response.status_code == 410:
        raise RequestExpired("the request expired or was already delivered")
    if response.status_code == 401:
        raise CliError("the server rejected this client's poll token (invalid_poll_token)")
    raise CliError(describe_failure(response))


def _read_status(data: dict[str, Any]) -> Outcome:
    status = data.get("status")
    if status == "pending":
        have, need = data.get("approvals"), data.get("approvals_required")
        if type(have) is int and type(need) is int and 0 <= have <= need <= 99:
            return Pending(have, need)  # a count only shown, never trusted
        return Pending()
    if status == "ready":
        return Ready(_decode_ciphertext(data.get("ciphertext_base64")))
    if status == "denied":
        raise RequestDenied("the request was denied by the approver")
    if status == "failed":
        message = safe_text(str(data.get("message") or "no reason given"))
        raise CliError(f"the approval could not be carried out: {message}")
    raise CliError(f"the server sent an unknown status {safe_text(str(status), limit=40)!r}")


def _decode_ciphertext(value: object) -> bytes:
    if not isinstance(value, str):
        raise CliError("the server said ready but sent no ciphertext")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CliError("the server sent a ciphertext that is not valid base64") from None


def cancel_request(client: httpx.Client, request: CreatedRequest) -> None:
    """Best effort: tell the server to drop the request (Ctrl-C, timeout, refusal)."""
    # the request expires on its own; cancelling only makes it go sooner
    with contextlib.suppress(httpx.HTTPError):
        client.delete(
            f"{REQUESTS}/{request.id}",
            headers={POLL_TOKEN_HEADER: request.poll_token},
            timeout=CANCEL_TIMEOUT,
        )
