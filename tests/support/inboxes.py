"""Real receivers on loopback for notification tests: an SMTP server and a webhook endpoint.

with smtp_inbox() as inbox, webhook_inbox() as hooks:
    ...  # point SMTP_HOST/SMTP_PORT at inbox.port and a webhook at hooks.url
    message = inbox.wait_for(lambda m: "ada@" in m["To"])
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import free_port, serve_in_background

HOST = "127.0.0.1"
# aiosmtpd logs every connection at INFO, also from its own thread while it stops, which
# can be after the test whose output stream a log handler still holds (a "Logging error"
# in one full run). Its warnings and errors still show.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class SmtpInbox:
    """Every message the loopback SMTP server accepted, parsed."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    # Given an address, the SMTP answer refusing it (e.g. "451 later"), or None to accept.
    refuse: Callable[[str], str | None] | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse is not None and (answer := self.refuse(address)) is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = bytes(envelope.content)
        message = email.message_from_bytes(content, policy=email.policy.default)
        with self.changed:
            self.raw.append(content)
            self.messages.append(message)
            self.changed.notify_all()
        return "250 OK"

    def wait_for(self, match: Callable[[EmailMessage], bool], seconds: float = 20) -> EmailMessage:
        """The first message `match` accepts, waiting (on a condition, not a sleep loop)."""
        deadline = time.monotonic() + seconds
        with self.changed:
            while True:
                for message in self.messages:
                    if match(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such email among {len(self.messages)}")
                self.changed.wait(left)


@contextlib.contextmanager
def smtp_inbox(port: int | None = None, **smtp_options: Any) -> Iterator[SmtpInbox]:
    """An aiosmtpd server on loopback (a free port unless given) until the block ends.

    `smtp_options` go to aiosmtpd's SMTP (tls_context, require_starttls, authenticator…).
    """
    inbox = SmtpInbox(port=port or free_port())
    controller = Controller(inbox, hostname=HOST, port=inbox.port, **smtp_options)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@dataclass
class Hook:
    """One POST the webhook receiver took."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class WebhookInbox:
    """Every POST to the loopback webhook receiver; `status` is what it answers."""

    url: str
    hooks: list[Hook] = field(default_factory=list)
    status: int = 200
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, match: Callable[[Hook], bool], seconds: float = 20) -> Hook:
        deadline = time.monotonic() + seconds
        with self.changed:
            while True:
                for hook in self.hooks:
                    if match(hook):
                        return hook
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such webhook among {len(self.hooks)}")
                self.changed.wait(left)


@contextlib.contextmanager
def webhook_inbox() -> Iterator[WebhookInbox]:
    """A threaded HTTP server on loopback recording every POST."""
    port = free_port()
    inbox = WebhookInbox(url=f"http://{HOST}:{port}/hooks/envcat")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with inbox.changed:
                inbox.hooks.append(Hook(self.path, dict(self.headers.items()), body))
                inbox.changed.notify_all()
            self.send_response(inbox.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((HOST, port), Handler)
    thread = serve_in_background(server)
    try:
        yield inbox
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
