"""Client addresses come from the socket unless TRUSTED_PROXIES says otherwise (issue #12, 2).

Real servers: the api and the bff on loopback (tests/support/stack.py). The bff
vouches for the client address with a proof (envcat/core/forwarding.py); the
api ignores X-Forwarded-For and any unproven or replayed claim.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from envcat.core import forwarding
from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.bff import module_stack
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

LIMIT = 3
OK, NO = "admitted", "limited"


def _stack(
    redis_base_url: str,
    redis_dbs: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
    hops: int,
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url,
        redis_dbs,
        tmp_path_factory,
        trusted_proxies=hops,
        request_rate_limit=f"{LIMIT}/minute",
    ) as stack:
        yield stack


@pytest.fixture
def direct_stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """The bff published as-is (the shipped compose layout): TRUSTED_PROXIES=0."""
    yield from _stack(redis_base_url, redis_dbs, tmp_path_factory, 0)


@pytest.fixture
def proxied_stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """The bff behind one TLS proxy: TRUSTED_PROXIES=1."""
    yield from _stack(redis_base_url, redis_dbs, tmp_path_factory, 1)


def _body() -> dict[str, str]:
    return {"client_pubkey": encode_public_key(generate_keypair())}


def _create(url: str, headers: dict[str, str] | None = None) -> str:
    """`limited` for a 429, else `admitted` (the limit is checked before the body is read)."""
    reply = httpx.post(f"{url}/api/v1/requests", json=_body(), headers=headers)
    assert reply.status_code < 500, reply.text
    return NO if reply.status_code == 429 else OK


def test_rotating_x_forwarded_for_does_not_escape_the_limit(direct_stack: LiveStack) -> None:
    codes = [
        _create(direct_stack.bff_url, {"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(8)
    ]
    assert codes == [OK] * LIMIT + [NO] * (8 - LIMIT)


def test_behind_one_proxy_the_last_hop_is_the_client(proxied_stack: LiveStack) -> None:
    url = proxied_stack.bff_url
    # What the client wrote comes first; the trusted proxy appends the address it saw.
    spoofed = [_create(url, {"X-Forwarded-For": f"10.9.9.{n}, 203.0.113.7"}) for n in range(6)]
    assert spoofed == [OK] * LIMIT + [NO] * (6 - LIMIT)
    assert _create(url, {"X-Forwarded-For": "10.9.9.1, 203.0.113.8"}) == OK


def test_the_api_ignores_unproven_client_addresses(direct_stack: LiveStack) -> None:
    api = direct_stack.api_url
    forged = {forwarding.HEADER_CLIENT_IP: "192.0.2.1", forwarding.HEADER_CLIENT_PROOF: "1.x.y"}
    codes = [
        _create(api, {"X-Forwarded-For": f"192.0.2.{n}", **forged, "X-Real-IP": f"192.0.2.{n}"})
        for n in range(LIMIT + 2)
    ]
    assert codes == [OK] * LIMIT + [NO, NO]


def test_a_proof_counts_once_and_only_for_its_path(direct_stack: LiveStack) -> None:
    api, secret = direct_stack.api_url, direct_stack.secret
    proof = forwarding.client_headers(secret, "192.0.2.50", "POST", "/api/v1/requests")
    # Spend the socket's quota (127.0.0.1); a genuine fresh proof still gets through.
    assert [_create(api) for _ in range(LIMIT)] == [OK] * LIMIT
    assert _create(api) == NO
    assert _create(api, proof) == OK
    assert _create(api, proof) == NO  # replayed: back to the socket's address
    elsewhere = forwarding.client_headers(secret, "192.0.2.51", "POST", "/api/v1/other")
    assert _create(api, elsewhere) == NO
    stale = forwarding.client_headers(secret, "192.0.2.52", "POST", "/api/v1/requests", now=1.0)
    assert _create(api, stale) == NO
    fresh = forwarding.client_headers(secret, "192.0.2.52", "POST", "/api/v1/requests")
    assert _create(api, fresh) == OK


def test_proofs_need_the_shared_secret_and_a_real_address() -> None:
    secret, other = "a" * 64, "b" * 64
    headers = forwarding.client_headers(secret, "2001:db8::1", "GET", "/x", now=1000.0)
    ip, proof = headers[forwarding.HEADER_CLIENT_IP], headers[forwarding.HEADER_CLIENT_PROOF]
    assert forwarding.verified_client(secret, ip, proof, "GET", "/x", now=1000.0) is not None
    assert forwarding.verified_client(other, ip, proof, "GET", "/x", now=1000.0) is None
    assert forwarding.verified_client(secret, "2001:db8::2", proof, "GET", "/x", now=1000) is None
    assert forwarding.verified_client(secret, ip, proof, "POST", "/x", now=1000.0) is None
    assert forwarding.verified_client(secret, ip, proof, "GET", "/x", now=1100.0) is None
    assert forwarding.client_headers(secret, "not-an-ip", "GET", "/x") == {}
