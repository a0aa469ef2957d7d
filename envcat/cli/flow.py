"""The approval flow: ask, show the phrase, wait for the decision, open the values.

RFC 8628 polling rules apply: never poll faster than `interval`; `slow_down`
adds 5 s to it for good; network errors are retried with capped exponential
backoff until the request expires. Ctrl-C, SIGTERM, SIGHUP (the terminal
closed) and a local timeout cancel the request on the server, so nobody can
approve what no one is waiting for. SIGTERM and SIGHUP are caught on their own,
so cancelling works even when SIGINT is ignored (`nohup envcat … &`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from envcat.cli.context import request_context
from envcat.cli.display import Terminal
from envcat.cli.errors import (
    Cancelled,
    CliError,
    RequestExpired,
    ServerUnreachable,
    terminated,
)
from envcat.cli.protocol import (
    LOGINS,
    POLL_SECONDS,
    REQUESTS,
    CreatedRequest,
    Pending,
    Ready,
    RetryLater,
    ServerBusy,
    ServerBusyCreating,
    SlowDown,
    cancel_request,
    create_request,
    describe_transport_error,
    wait_once,
)
from envcat.cli.runtime import Clock
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.usercode import user_code

SLOW_DOWN_STEP = 5.0
# Creating while the server is busy: this many tries, Retry-After apart (about half a minute).
BUSY_ATTEMPTS = 6
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0


@dataclass(frozen=True)
class Hints:
    """What the person asked for; the approver decides what is actually sent."""

    workspace: str
    bundle: str | None
    template_keys: Sequence[str]
    command: Sequence[str]  # already redacted: it is shown to the approver
    id_token: str | None = None  # a workload's OIDC ID token (issue #16): sent, never shown
    service_token: str | None = None  # ENVCAT_TOKEN (issue #16): one header, never shown
    user_token: str | None = None  # `envcat login`'s token: names the requester (issue #17)
    login: bool = False  # `envcat login` itself: the sealed payload is a user token
    device: SigningKey | None = None  # this terminal user's key (issue #17): signs the request


@dataclass(frozen=True)
class Sealed:
    """A delivery as it arrived: not trusted until `envcat.cli.verify` checked it."""

    private_key: PrivateKey
    public_key: str
    request_id: str
    ciphertext: bytes


class _Signalled(BaseException):
    """Raised in the main thread by SIGTERM/SIGHUP while waiting, like KeyboardInterrupt."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def _terminated(exc: _Signalled) -> CliError:
    return terminated(exc.signal_number, signal.Signals(exc.signal_number).name)


CANCEL_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """While waiting, turn SIGTERM and SIGHUP into `_Signalled` so the request is cancelled."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signal_number: int, frame: object) -> None:
        raise _Signalled(signal_number)

    previous = {number: signal.signal(number, interrupt) for number in CANCEL_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def request_body(public_key: str, hints: Hints) -> dict[str, Any]:
    """Return the JSON body of `POST /requests` for our public key and the hints."""
    body: dict[str, Any] = {
        "client_pubkey": public_key,
        "workspace": hints.workspace,
        "context": request_context(hints.command),
    }
    if hints.bundle:
        body["bundle"] = hints.bundle
    if hints.template_keys:
        body["template_keys"] = list(hints.template_keys)
    if hints.id_token is not None:
        body["id_token"] = hints.id_token
    if hints.device is not None:
        from envcat.cli.device import signed_block

        body["device"] = signed_block(hints.device, body)
    return body


def backoff_delays() -> Iterator[float]:
    """Yield 0.5, 1, 2, 4, 8, 8, … seconds: the retry delays after network errors."""
    delay = BACKOFF_FIRST
    while True:
        yield delay
        delay = min(delay * 2, BACKOFF_MAX)


class ApprovalFlow:
    """One request from creation to the opened values, showing progress on stderr."""

    def __init__(self, client: httpx.Client, terminal: Terminal, clock: Clock) -> None:
        self._client = client
        self._terminal = terminal
        self._clock = clock

    def fetch(self, hints: Hints, timeout: float | None = None) -> Sealed:
        """Return the sealed delivery; raise a CliError subclass for every other end."""
        private_key = generate_keypair()
        public_key = encode_public_key(private_key)
        with cancel_on_signals():  # from the POST on: a request we know of is never left behind
            try:
                request = self._create(request_body(public_key, hints), hints)
            except _Signalled as exc:
                raise _terminated(exc) from None
            limit = request.expires_in if timeout is None else min(timeout, request.expires_in)
            deadline = self._clock.monotonic() + limit
            ciphertext = self._await_decision(
                request, public_key, deadline, limit < request.expires_in
            )
        return Sealed(private_key, public_key, request.id, ciphertext)

    def _create(self, body: dict[str, Any], hints: Hints) -> CreatedRequest:
        """Create the request; while the server says it is busy, wait as asked and ask again."""
        path = LOGINS if hints.login else REQUESTS
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            try:
                return create_request(
                    self._client, body, hints.service_token, user_token=hints.user_token, path=path
                )
            except ServerBusyCreating as exc:
                if attempt == BUSY_ATTEMPTS:
                    raise
                self._terminal.note(f"EnvCat is busy; asking again in {exc.seconds:.0f} s…")
                self._clock.sleep(exc.seconds)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_phrase(self, request: CreatedRequest, public_key: str) -> None:
        expected = user_code(request.id, public_key)
        if request.user_code != expected:
            self._cancel_quietly(request)
            raise CliError(
                "the server's verification phrase does not belong to this request "
                "(it does not match our key); refusing it. A proxy or the server may be "
                "tampering with the request: do not approve anything for it."
            )

    def _await_decision(
        self, request: CreatedRequest, public_key: str, deadline: float, is_local: bool
    ) -> bytes:
        error: CliError
        try:
            self._check_phrase(request, public_key)
            self._show(request)
            if request.workload_mode != "automatic":
                self._terminal.start_waiting(lambda: deadline - self._clock.monotonic())
            return self._poll_until(request, deadline, is_local)
        except KeyboardInterrupt:
            error = Cancelled()
        except _Signalled as exc:
            error = _terminated(exc)
        except (RequestExpired, ServerUnreachable) as exc:
            error = exc
        finally:
            # a closed terminal (SIGHUP) must not stop the cancel
            with contextlib.suppress(OSError):
                self._terminal.stop_waiting()
        self._cancel_quietly(request)
        raise error

    def _show(self, request: CreatedRequest) -> None:
        """The approval link and phrase; none when a trust policy already approved."""
        if request.workload_mode == "automatic" and request.workload_kind == "grant":
            self._terminal.line(f"Asked under {request.workload}; waiting for the sealed delivery…")
            return
        if request.workload_mode == "automatic":
            self._terminal.line(
                f"Approved by trust policy for {request.workload}; waiting for the sealed delivery…"
            )
            return
        if request.workload_mode is not None:
            self._terminal.line(
                f"Asked as {request.workload}; this policy needs a person to approve it."
            )
        self._terminal.show_approval(request.verification_uri_complete, request.user_code)

    def _cancel_quietly(self, request: CreatedRequest) -> None:
        # a second Ctrl-C or signal stops the attempt: the request expires on its own anyway
        with contextlib.suppress(KeyboardInterrupt, _Signalled):
            cancel_request(self._client, request)

    def _poll_until(self, request: CreatedRequest, deadline: float, is_local: bool) -> bytes:
        interval = request.interval
        delays = backoff_delays()
        last_error: httpx.TransportError | None = None
        busy: str | None = None
        counted = 0  # k-of-n approvals seen; each new one is news (at most 99 re-polls)
        while (remaining := deadline - self._clock.monotonic()) > 0:
            started = self._clock.monotonic()
            try:
                outcome = wait_once(self._client, request, min(POLL_SECONDS, math.ceil(remaining)))
            except httpx.TransportError as exc:
                last_error = exc
                self._terminal.note("connection lost, retrying…")
                self._sleep(next(delays), deadline)
                continue
            if isinstance(outcome, ServerBusy):
                busy = f"the server stayed unavailable (HTTP {outcome.status})"
                self._terminal.note(f"server unavailable (HTTP {outcome.status}), retrying…")
                self._sleep(next(delays), deadline)
                continue
            last_error, busy, delays = None, None, backoff_delays()
            self._terminal.note(outcome.progress() if isinstance(outcome, Pending) else "")
            news = isinstance(outcome, Pending) and (outcome.approvals or 0) > counted
            if isinstance(outcome, Pending) and outcome.approvals is not None:
                counted = max(counted, outcome.approvals)
            if isinstance(outcome, Ready):
                return outcome.ciphertext
            if isinstance(outcome, SlowDown):
                interval += SLOW_DOWN_STEP
                delay = interval
            elif isinstance(outcome, RetryLater):
                delay = interval if outcome.seconds is None else outcome.seconds
            elif news:  # a k-of-n vote woke the long poll: listen again at once
                delay = 0
            else:  # pending: a server that answers at once must not make us poll faster
                delay = interval - (self._clock.monotonic() - started)
            self._sleep(delay, deadline)
        if busy is not None:
            raise ServerUnreachable(f"{busy} until the wait ended")
        raise self._deadline_error(last_error, is_local)

    def _sleep(self, seconds: float, deadline: float) -> None:
        seconds = min(seconds, deadline - self._clock.monotonic())
        if seconds > 0:
            self._clock.sleep(seconds)

    def _deadline_error(self, last_error: httpx.TransportError | None, is_local: bool) -> CliError:
        if last_error is not None:
            server = str(self._client.base_url).rstrip("/")
            return ServerUnreachable(
                f"lost contact with the EnvCat server at {server} until the wait ended: "
                f"{describe_transport_error(last_error)}"
            )
        if is_local:
            return RequestExpired("no decision before --timeout; the request was cancelled")
        return RequestExpired("the request expired before anyone approved it")
