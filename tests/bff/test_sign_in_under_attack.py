"""Issue #12 findings 3 and 5 with real processes: nobody can keep the owner out, and a
copied session cookie dies at sign-out.

gunicorn runs the api and the bff (TRUSTED_PROXIES=1, so X-Forwarded-For is the
client address, as behind a TLS proxy); two attacker processes hammer one email
with wrong passwords from rotating addresses while the owner signs in from an
address of their own, again and again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from envcat.bff.throttle import FREE_EMAIL_FAILURES, TAINT_AFTER
from tests.hardening.processes import processes, server_environment, wait_until_healthy
from tests.support import free_port, private_redis
from tests.support.bff import PASSWORD, csrf_in, unique_email
from tests.support.databases import migrated
from tests.support.settings import make_settings

pytestmark = [pytest.mark.slow]

ATTEMPTS_PER_ATTACKER = 60
ADDRESSES_PER_ATTACKER = 5
OWNER_ADDRESS = "192.0.2.10"
ATTACKER = r"""
import collections, json, re, sys
import httpx
url, email, prefix, count, attempts = sys.argv[1:6]
statuses = collections.Counter()
with httpx.Client(base_url=url, timeout=60.0) as client:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/sign-in").text).group(1)
    for n in range(int(attempts)):
        reply = client.post(
            "/sign-in",
            data={"email": email, "password": f"guess-{n}-wrong", "csrf_token": token},
            headers={"X-Forwarded-For": f"{prefix}.{n % int(count)}"},
        )
        statuses[reply.status_code] += 1
print(json.dumps(statuses))
"""


@dataclass
class Servers:
    api_url: str
    bff_url: str
    secret: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp_path = tmp_path_factory.mktemp("attack")
    api_port, bff_port = free_port(), free_port()
    with private_redis(tmp_path / "redis") as redis, processes(tmp_path / "logs") as procs:
        settings = make_settings(
            f"sqlite:///{tmp_path / 'envcat.db'}",
            f"{redis.url}/0",
            f"{redis.url}/1",
            api_base_url=f"http://127.0.0.1:{api_port}",
            public_url=f"http://127.0.0.1:{bff_port}",
            trusted_proxies=1,
        )
        migrated(settings.database_url)
        env = server_environment(settings)
        api_url = procs.start_web("api", api_port, env)
        bff_url = procs.start_web("bff", bff_port, env)
        wait_until_healthy(api_url)
        wait_until_healthy(bff_url)
        yield Servers(api_url, bff_url, settings.bff_shared_secret.get_secret_value())


def _sign_up(servers: Servers, email: str) -> None:
    with httpx.Client(base_url=servers.bff_url, timeout=30.0) as client:
        token = csrf_in(client.get("/sign-up").text)
        reply = client.post(
            "/sign-up", data={"email": email, "password": PASSWORD, "csrf_token": token}
        )
        assert reply.status_code == 302, reply.text


def _owner_signs_in(servers: Servers, email: str) -> int:
    headers = {"X-Forwarded-For": OWNER_ADDRESS}
    with httpx.Client(base_url=servers.bff_url, timeout=30.0, headers=headers) as client:
        token = csrf_in(client.get("/sign-in").text)
        reply = client.post(
            "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token}
        )
        if reply.status_code == 302:
            assert client.get("/account").status_code == 200
        return reply.status_code


def test_the_owner_signs_in_while_an_attacker_rotates_addresses(servers: Servers) -> None:
    email = unique_email("owner")
    _sign_up(servers, email)
    attackers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                ATTACKER,
                servers.bff_url,
                email,
                f"198.18.{n}",
                str(ADDRESSES_PER_ATTACKER),
                str(ATTEMPTS_PER_ATTACKER),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    owner = []
    while any(attacker.poll() is None for attacker in attackers):
        time.sleep(0.5)
        owner.append(_owner_signs_in(servers, email))
    owner.append(_owner_signs_in(servers, email))  # and once the attack is over
    totals: dict[str, int] = {}
    for attacker in attackers:
        out, _ = attacker.communicate(timeout=60)
        assert attacker.returncode == 0
        for status, count in json.loads(out).items():
            totals[status] = totals.get(status, 0) + count
    assert len(owner) >= 2 and set(owner) == {302}, owner
    assert totals.get("429", 0) > 0, totals  # the attack was slowed …
    addresses = 2 * ADDRESSES_PER_ATTACKER
    ramp = 12  # delayed slots: 1, 2, 4 … 512 s, then one per 15 min
    guesses = totals.get("401", 0)
    # … to TAINT_AFTER guesses per address plus the email's delayed slots.
    assert guesses <= TAINT_AFTER * addresses + FREE_EMAIL_FAILURES + ramp, totals
    assert set(totals) <= {"401", "429"}, totals


def test_a_copied_cookie_is_401_after_sign_out(servers: Servers) -> None:
    email = unique_email("copied")
    _sign_up(servers, email)
    with httpx.Client(base_url=servers.bff_url, timeout=30.0) as client:
        token = csrf_in(client.get("/sign-in").text)
        reply = client.post(
            "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token}
        )
        assert reply.status_code == 302
        cookies = httpx.Cookies(client.cookies)
        with httpx.Client(base_url=servers.bff_url, timeout=30.0, cookies=cookies) as copy:
            assert copy.get("/api/v1/me").status_code == 200
            token = csrf_in(client.get("/account").text)
            assert client.post("/sign-out", data={"csrf_token": token}).status_code == 302
            me = copy.get("/api/v1/me")
            assert (me.status_code, me.json()["error"]) == (401, "unauthorized")
            page = copy.get("/bundles")
            assert page.status_code == 302 and page.headers["Location"].startswith("/sign-in")
