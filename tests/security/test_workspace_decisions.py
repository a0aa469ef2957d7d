"""A member of another workspace cannot decide a request (issue #11 A, claims of issue #23).

A link holder who is signed in to another workspace, approving with a bundle of
their *own* workspace (even one named like the victim's), gets the same 404 as
for a request that does not exist; nothing is queued, audited or delivered, and
the request stays pending for its own workspace.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from flask.testing import FlaskClient

from tests.support.api import REQUESTS, Cli, SeedKey, audit_actions, seed_bundle

VICTIM = "t-acme"
ATTACKER = "t-evil"


def _queued(broker_url: str) -> list[Any]:
    client = redis.Redis.from_url(broker_url)
    try:
        return [json.loads(raw) for raw in client.lrange("approvals", 0, -1)]
    finally:
        client.close()


def test_a_member_of_another_workspace_gets_404_and_the_request_stays_pending(
    api_client: FlaskClient, signed_as: Any, broker_url: str
) -> None:
    seed_bundle(VICTIM, "production/api", [SeedKey("DATABASE_URL", "postgres://db/real")])
    own_bundle = seed_bundle(ATTACKER, "production/api", [SeedKey("LD_PRELOAD", "./evil.so")])
    attacker = signed_as("u-mallory", ATTACKER)
    victim_cli = Cli.start(api_client, workspace=VICTIM)
    body = {"bundle_id": own_bundle, "include_keys": ["LD_PRELOAD"]}

    missing = attacker.post(f"{REQUESTS}/{'A' * 32}/encrypt-from-bundle", json=body)
    approve = attacker.post(f"{REQUESTS}/{victim_cli.id}/encrypt-from-bundle", json=body)
    deny = attacker.post(f"{REQUESTS}/{victim_cli.id}/deny")

    assert missing.status_code == 404
    for response in (approve, deny):
        assert response.status_code == 404
        assert response.get_json() == missing.get_json()  # nothing says the request exists
    assert _queued(broker_url) == []
    assert audit_actions(VICTIM) == audit_actions(ATTACKER) == []
    assert victim_cli.wait().get_json() == {"status": "pending"}


def test_a_member_of_the_requests_workspace_may_still_decide_it(
    api_client: FlaskClient, signed_as: Any
) -> None:
    signed_as("u-mallory", ATTACKER)  # the other workspace exists and is not involved
    member = signed_as("u-alice", VICTIM, "member")
    cli = Cli.start(api_client, workspace=VICTIM)

    assert member.post(f"{REQUESTS}/{cli.id}/deny").status_code == 200
    assert cli.wait().get_json()["status"] == "denied"
    assert audit_actions(VICTIM) == [("request.denied", cli.id)]
