"""Device keys and time-boxed grants (issue #17), attacked end to end.

Real api, bff and Celery worker on loopback (SQLite and PostgreSQL); the CLI as real
`envcat get` processes, one config directory (so one device key) per "device". A grant
made by a person's approval delivers later requests of the same device, bundle and key
subset with nobody in the loop; everything else waits for a person.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from nacl.signing import SigningKey

from envcat.cli.device import signed_block
from envcat.core.device import fingerprint
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import utcnow
from envcat.services import grants
from tests.support.cli_process import assert_waited
from tests.support.stack import LiveStack, live_stack

ENVCAT = [sys.executable, "-m", "envcat.cli.main"]
VALUES = {"DATABASE_URL": "postgres://app:canary-grant-7f3@db/app", "API_TOKEN": "canary-tok-19"}
BUNDLE = "production/api"
APPROVE_URL = re.compile(r"/approve/([A-Za-z0-9_-]{16,128})")


@dataclass
class World:
    stack: LiveStack
    slug: str
    admin: httpx.Client
    bundle_id: str
    tmp: Path

    def envcat(self, device: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ENVCAT, *args],
            capture_output=True,
            text=True,
            env=self.environ(device),
            cwd=self.tmp,
            timeout=60,
            check=False,
        )

    def environ(self, device: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ENVCAT_")}
        home = self.tmp / device
        return {
            **base,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "ENVCAT_SERVER": self.stack.bff_url,
            "ENVCAT_WORKSPACE": self.slug,
        }

    def device_key(self, device: str) -> SigningKey:
        text = (self.tmp / device / "config" / "envcat" / "device_key").read_text()
        return SigningKey(base64.b64decode(text.strip()))


@pytest.fixture
def world(database_url: str, redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[World]:
    with live_stack(database_url, redis_url, broker_url) as stack:
        account = stack.sign_up("alice@example.test", "correct horse battery staple")
        with stack.signed(account["user"]["id"], account["tenant"]["id"]) as admin:
            bundle = admin.post("/api/v1/bundles", json={"name": BUNDLE}).json()
            for name, value in VALUES.items():
                added = admin.post(
                    f"/api/v1/bundles/{bundle['id']}/keys", json={"name": name, "value": value}
                )
                assert added.status_code == 201, added.text
            yield World(stack, account["tenant"]["slug"], admin, bundle["id"], tmp_path)


def _approve_with_grant(world: World, device: str, hours: int, *keys: str) -> tuple[str, str]:
    """Run `envcat get` on `device`, approve its request with a grant; return (stdout, stderr)."""
    args = ["get", BUNDLE, "--format", "json", "--no-qr", *[f"-k{k}" for k in keys]]
    process = subprocess.Popen(
        [*ENVCAT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=world.environ(device),
        cwd=world.tmp,
    )
    assert process.stderr is not None
    seen = ""
    while (match := APPROVE_URL.search(seen)) is None:
        line = process.stderr.readline()
        assert line, seen
        seen += line
    request_id = match.group(1)
    context = world.stack.signed("x", "x")  # the context endpoint is public
    shown = context.get(f"/api/v1/requests/{request_id}/context").json()
    assert shown["device"] == fingerprint(bytes(world.device_key(device).verify_key))
    approved = world.admin.post(
        f"/api/v1/requests/{request_id}/encrypt-from-bundle",
        json={"bundle_id": world.bundle_id, "include_keys": list(keys), "grant_hours": hours},
    )
    assert approved.status_code == 202, approved.text
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, seen + err
    return out, seen + err


def _signed_body(key: SigningKey, **hints: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_pubkey": encode_public_key(generate_keypair()),
        "workspace": hints.pop("workspace"),
        "bundle": BUNDLE,
        **hints,
    }
    body["device"] = signed_block(key, body)
    return body


def _waits(world: World, *asks: tuple[str, ...]) -> None:
    """Each (device, key…) ask, run at once as real processes, waits for a person."""
    running = [
        subprocess.Popen(
            [*ENVCAT, "get", BUNDLE, "--timeout", "1", *[f"-k{k}" for k in keys]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=world.environ(device),
            cwd=world.tmp,
        )
        for device, *keys in asks
    ]
    for process in running:
        assert_waited(process)  # nobody approved: it waited, then gave up


# The grant store runs on SQLite and PostgreSQL in tests/api/test_grants.py; these real
# processes (about 10 s a test) run once, on SQLite.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_a_grant_delivers_to_its_device_only_and_stops_when_revoked_or_expired(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = world.admin.get(f"/api/v1/bundles/{world.bundle_id}/grant-policy")
    assert default.json() == {"max_hours": 0}  # grants are off until an admin allows them
    policy = world.admin.put(
        f"/api/v1/bundles/{world.bundle_id}/grant-policy", json={"max_hours": 12}
    )
    assert policy.status_code == 200, policy.text

    out, err = _approve_with_grant(world, "laptop", 3, "DATABASE_URL")
    assert json.loads(out) == {"DATABASE_URL": VALUES["DATABASE_URL"]}
    laptop = world.device_key("laptop")
    assert f"this device: {fingerprint(bytes(laptop.verify_key))}" in err
    assert (world.tmp / "laptop/config/envcat/device_key").stat().st_mode & 0o777 == 0o600

    again = world.envcat("laptop", "get", BUNDLE, "-k", "DATABASE_URL", "--format", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"DATABASE_URL": VALUES["DATABASE_URL"]}
    assert "delivered under grant by alice@example.test, expires in 3 h" in again.stderr
    assert "Approve this request in a browser" not in again.stderr
    audit = world.admin.get("/api/v1/audit", params={"action": "request.granted"}).json()
    (granted,) = audit["events"]
    listed = world.admin.get("/api/v1/grants", params={"bundle_id": world.bundle_id}).json()
    (grant,) = listed["items"]
    assert granted["details"]["grant_id"] == grant["id"] and grant["is_active"]
    assert grant["device"] == fingerprint(bytes(laptop.verify_key))

    # another device (its own key), and keys outside the grant: a person must approve
    _waits(world, ("desktop", "DATABASE_URL"), ("laptop", "DATABASE_URL", "API_TOKEN"))

    # the clock passes the expiry: the next request waits
    later = utcnow() + timedelta(hours=3, seconds=1)
    monkeypatch.setattr(grants, "now", lambda: later)
    _waits(world, ("laptop", "DATABASE_URL"))
    monkeypatch.undo()

    revoked = world.admin.delete(f"/api/v1/grants/{grant['id']}")
    assert revoked.status_code == 204
    _waits(world, ("laptop", "DATABASE_URL"))


@SQLITE_ONLY
def test_a_copied_public_key_or_a_replayed_signature_gets_nothing(world: World) -> None:
    world.admin.put(f"/api/v1/bundles/{world.bundle_id}/grant-policy", json={"max_hours": 12})
    _approve_with_grant(world, "laptop", 2, "DATABASE_URL")
    victim = world.device_key("laptop")
    public = httpx.Client(base_url=world.stack.bff_url, timeout=30)

    forged = _signed_body(SigningKey.generate(), workspace=world.slug)
    forged["device"]["public_key"] = base64.b64encode(bytes(victim.verify_key)).decode()
    reply = public.post("/api/v1/requests", json=forged)
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_device_signature"

    genuine = _signed_body(victim, workspace=world.slug)  # as the victim's CLI made it
    first = public.post("/api/v1/requests", json=genuine)
    assert first.status_code == 201 and first.json().get("grant_id")  # sealed to its key only
    replayed = public.post("/api/v1/requests", json=genuine)
    assert replayed.status_code == 401, replayed.text
    moved = {**genuine, "client_pubkey": encode_public_key(generate_keypair())}
    reply = public.post("/api/v1/requests", json=moved)  # the attacker's own X25519 key
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_device_signature"
    stale = _signed_body(victim, workspace=world.slug)
    stale["device"]["timestamp"] -= 3600
    assert public.post("/api/v1/requests", json=stale).status_code == 401


@SQLITE_ONLY
def test_other_tenants_grants_a_swapped_device_and_bundles_without_grants_do_nothing(
    world: World,
) -> None:
    # the bundle does not allow grants: ticking one is refused and nothing is recorded
    process_out = world.envcat("laptop", "device")
    assert process_out.returncode == 0 and process_out.stdout.startswith("this device: ")
    laptop = world.device_key("laptop")
    public = httpx.Client(base_url=world.stack.bff_url, timeout=30)
    created = public.post("/api/v1/requests", json=_signed_body(laptop, workspace=world.slug))
    request_id = created.json()["id"]
    refused = world.admin.post(
        f"/api/v1/requests/{request_id}/encrypt-from-bundle",
        json={"bundle_id": world.bundle_id, "include_keys": ["DATABASE_URL"], "grant_hours": 2},
    )
    assert refused.status_code == 400 and "does not allow grants" in refused.json()["message"]
    assert world.admin.get("/api/v1/grants").json()["items"] == []

    # a Redis writer swaps the request's device for their own: it no longer verifies
    world.admin.put(f"/api/v1/bundles/{world.bundle_id}/grant-policy", json={"max_hours": 12})
    attacker = fingerprint(bytes(SigningKey.generate().verify_key))
    store = redis.Redis.from_url(str(world.stack.settings.redis_url), decode_responses=True)
    mac = str(store.get(grants.device_key(request_id))).rpartition("#")[2]
    store.set(grants.device_key(request_id), f"{attacker}#{mac}")
    shown = public.get(f"/api/v1/requests/{request_id}/context").json()
    assert shown.get("device") is None
    refused = world.admin.post(
        f"/api/v1/requests/{request_id}/encrypt-from-bundle",
        json={"bundle_id": world.bundle_id, "include_keys": ["DATABASE_URL"], "grant_hours": 2},
    )
    assert refused.status_code == 400 and "not signed by a device key" in refused.text
    world.admin.put(f"/api/v1/bundles/{world.bundle_id}/grant-policy", json={"max_hours": 0})

    # mallory's workspace trusts the laptop for her own production/api
    other = world.stack.sign_up("mallory@example.test", "correct horse battery staple")
    with world.stack.signed(other["user"]["id"], other["tenant"]["id"]) as mallory:
        theirs = mallory.post("/api/v1/bundles", json={"name": BUNDLE}).json()
        mallory.post(
            f"/api/v1/bundles/{theirs['id']}/keys", json={"name": "DATABASE_URL", "value": "x"}
        )
        mallory.put(f"/api/v1/bundles/{theirs['id']}/grant-policy", json={"max_hours": 12})
        made = public.post(
            "/api/v1/requests", json=_signed_body(laptop, workspace=other["tenant"]["slug"])
        ).json()
        approved = mallory.post(
            f"/api/v1/requests/{made['id']}/encrypt-from-bundle",
            json={"bundle_id": theirs["id"], "include_keys": ["DATABASE_URL"], "grant_hours": 5},
        )
        assert approved.status_code == 202, approved.text
        assert len(mallory.get("/api/v1/grants").json()["items"]) == 1
        assert (
            world.admin.delete(
                f"/api/v1/grants/{mallory.get('/api/v1/grants').json()['items'][0]['id']}"
            ).status_code
            == 404
        )
    _waits(world, ("laptop", "DATABASE_URL"))  # alice's workspace: still a person's decision
