"""The bff's keep-alive pool to the api: reuse, dropped connections, no repeated POSTs.

A real HTTP/1.1 server on a free loopback port stands in for the api; it counts the
connections it accepts and the requests it reads.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import pytest

from envcat.bff.apiclient import ApiClient, ApiUnavailable, CallerInfo, Signer
from envcat.core import signing
from tests.support.api_stand_in import serving, stand_in

Reply = tuple[int, bytes] | None

SECRET = "ab" * 32
NOBODY = CallerInfo(client_ip=None, user_agent=None, request_id=None)


@dataclass
class Seen:
    connections: int = 0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    hang_up_on: set[str] = field(default_factory=set)  # methods answered by closing


def _server(seen: Seen) -> ThreadingHTTPServer:
    def connected() -> None:
        seen.connections += 1

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        seen.requests.append((method, path, headers, body))
        return None if method in seen.hang_up_on else (200, b'{"ok":true}')

    return stand_in(answer, on_connect=connected)


@pytest.fixture
def api() -> Iterator[tuple[ApiClient, Seen, ThreadingHTTPServer]]:
    seen = Seen()
    server = _server(seen)
    with serving(server) as url:
        client = ApiClient(url, SECRET)
        try:
            yield client, seen, server
        finally:
            client.close()


def test_calls_reuse_one_kept_alive_connection(api: tuple[ApiClient, Seen, object]) -> None:
    client, seen, _ = api
    for _ in range(3):
        reply = client.send("GET", "/api/v1/requests/x/context", signer=None, caller=NOBODY)
        assert reply.status_code == 200
        assert reply.json() == {"ok": True}
    assert seen.connections == 1
    assert len(seen.requests) == 3


def test_signed_call_carries_a_signature_over_the_sent_path_query_and_body(
    api: tuple[ApiClient, Seen, object],
) -> None:
    client, seen, _ = api
    signer = Signer("u-1", "t-1")
    client.send(
        "POST", "/api/v1/keys?x=1", signer=signer, caller=NOBODY, params={"y": "2"}, json={"a": 1}
    )
    method, path, headers, body = seen.requests[-1]
    assert (method, path) == ("POST", "/api/v1/keys?x=1&y=2")
    expected = signing.canonical_message(
        "u-1",
        "t-1",
        headers[signing.HEADER_TIMESTAMP],
        headers[signing.HEADER_NONCE],
        "POST",
        "/api/v1/keys",
        "x=1&y=2",
        body,
    )
    assert signing.signature_matches(SECRET, expected, headers[signing.HEADER_SIGNATURE])
    assert body == b'{"a":1}'


def test_a_get_on_a_connection_the_api_dropped_is_sent_again(
    api: tuple[ApiClient, Seen, object],
) -> None:
    client, seen, _ = api
    client.send("GET", "/one", signer=None, caller=NOBODY)
    seen.hang_up_on.add("GET")
    with pytest.raises(ApiUnavailable) as raised:
        client.send("GET", "/two", signer=None, caller=NOBODY)
    # Tried on the kept connection, then once more on a new one: both hung up.
    assert raised.value.status == 503
    assert [r[1] for r in seen.requests] == ["/one", "/two", "/two"]
    seen.hang_up_on.clear()
    assert client.send("GET", "/three", signer=None, caller=NOBODY).status_code == 200


def test_a_post_is_never_sent_twice(api: tuple[ApiClient, Seen, object]) -> None:
    client, seen, _ = api
    client.send("GET", "/warm", signer=None, caller=NOBODY)
    seen.hang_up_on.add("POST")
    with pytest.raises(ApiUnavailable):
        client.send("POST", "/api/v1/requests", signer=None, caller=NOBODY, content=b"{}")
    assert [r[0] for r in seen.requests].count("POST") == 1


def test_an_api_that_is_not_there_is_a_503() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        client = ApiClient(f"http://127.0.0.1:{port}", SECRET)
        with pytest.raises(ApiUnavailable) as raised:
            client.send("GET", "/x", signer=None, caller=NOBODY)
    assert raised.value.status == 503
