"""Issue #12: the per-address cap on undecided requests holds through the real bff.

The bff sits behind one trusted proxy (TRUSTED_PROXIES=1 in test stacks), so the
address is the proxy's X-Forwarded-For; the bff vouches for it to the api with its
single-use proof. One address gets at most MAX_PENDING_PER_IP undecided requests;
another address is not affected; cancelling one frees a place.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.bff import module_stack
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow
CAP = 3


@pytest.fixture(scope="module")
def capped(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(redis_base_url, redis_dbs, tmp_path_factory, max_pending_per_ip=CAP) as s:
        yield s


def test_one_address_holds_at_most_the_cap_through_the_bff(capped: LiveStack) -> None:
    account = capped.sign_up("cap@example.test", "correct horse battery")
    url = f"{capped.bff_url}/api/v1/requests"

    def create(address: str) -> httpx.Response:
        body = {
            "client_pubkey": encode_public_key(generate_keypair()),
            "workspace": account["tenant"]["slug"],
        }
        return httpx.post(url, json=body, headers={"X-Forwarded-For": address}, timeout=30)

    made = [create("198.51.100.20") for _ in range(CAP)]
    assert [reply.status_code for reply in made] == [201] * CAP
    refused = create("198.51.100.20")
    assert (refused.status_code, refused.json()["error"]) == (429, "rate_limited")
    assert int(refused.headers["Retry-After"]) > 0
    assert create("198.51.100.21").status_code == 201  # another address
    first = made[0].json()
    cancelled = httpx.delete(
        f"{url}/{first['id']}", headers={"X-Poll-Token": first["poll_token"]}, timeout=30
    )
    assert cancelled.status_code == 204
    assert create("198.51.100.20").status_code == 201  # its place is free again
