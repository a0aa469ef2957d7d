"""A real HTTP/1.1 server on a free loopback port that stands in for the api in bff tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support import serve_in_background

# (method, path with query, headers, body) → (status, JSON body), or None to hang up
Answer = Callable[[str, str, dict[str, str], bytes], tuple[int, bytes] | None]


def stand_in(answer: Answer, on_connect: Callable[[], None] = lambda: None) -> ThreadingHTTPServer:
    """A server (not yet serving) answering every GET and POST with `answer`'s reply."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            on_connect()
            super().setup()

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reply = answer(self.command, self.path, dict(self.headers.items()), body)
            if reply is None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, content = reply
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = _answer  # http.server's naming

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    """Serve on a thread; yield the base URL; stop and close afterwards."""
    serve_in_background(server)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
