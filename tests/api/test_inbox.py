"""The approver inbox (issue #15): pending requests, decisions, and no other workspace's."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Flask

from envcat.services.access_requests import store
from tests.support.api import REQUESTS, Cli, SeedKey, seed_bundle

INBOX = "/api/v1/inbox"


def _ids(signed: Any) -> list[str]:
    response = signed.get(INBOX)
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()["requests"]]


def test_inbox_lists_this_workspaces_pending_requests_with_their_context(
    api_app: Flask, signed_as: Any, redis_client: redis.Redis
) -> None:
    owner = signed_as("u-owner", "t-acme", "owner")
    seed_bundle("t-acme", "production/api", [SeedKey("API_KEY", "sk-inbox-canary")])
    context = {"hostname": "build-7", "cwd": "/srv/app", "command": "envcat get production/api"}
    cli = Cli.start(api_app.test_client(), bundle="production/api", context=context)
    listed = owner.get(INBOX).get_json()["requests"]
    assert [item["id"] for item in listed] == [cli.id]
    item = listed[0]
    assert item["user_code"] == cli.created["user_code"]  # type: ignore[index]
    assert item["bundle"] == "production/api"
    assert item["context"]["hostname"] == "build-7"
    assert item["context"]["command"] == "envcat get production/api"
    assert (item["approvals"], item["approvals_required"]) == (0, 1)
    assert item["expires_at"] > item["created"]
    # ids and metadata only: no value, no public key, no poll token
    text = owner.get(INBOX).get_data(as_text=True)
    assert "sk-inbox-canary" not in text and cli.poll_token not in text
    assert cli.public_key not in text
    # the workspace's index in Redis holds the id and the client's address only
    members = [
        str(member) for member in redis_client.zrange(store.tenant_pending_key("t-acme"), 0, -1)
    ]
    assert [member.split(" ")[0] for member in members] == [cli.id]
    assert all(len(member.split(" ")) == 2 for member in members)


def test_another_workspaces_member_sees_nothing_and_cannot_name_it(
    api_app: Flask, signed_as: Any
) -> None:
    signed_as("u-owner", "t-acme", "owner")
    mallory = signed_as("u-mallory", "t-evil", "owner")
    cli = Cli.start(api_app.test_client(), bundle="production/api")
    assert _ids(mallory) == []
    # the tenant comes from the verified signature: a forged query or header changes nothing
    assert cli.id not in mallory.get(f"{INBOX}?tenant_id=t-acme").get_data(as_text=True)
    history = mallory.get(f"{INBOX}/history").get_json()
    assert history["events"] == []


def test_a_decided_request_leaves_the_inbox_and_enters_the_history(
    api_app: Flask, signed_as: Any
) -> None:
    owner = signed_as("u-owner", "t-acme", "owner")
    denied = Cli.start(api_app.test_client(), bundle="production/api")
    cancelled = Cli.start(api_app.test_client(), bundle="production/api")
    waiting = Cli.start(api_app.test_client(), bundle="production/api")
    assert set(_ids(owner)) == {denied.id, cancelled.id, waiting.id}
    assert owner.post(f"{REQUESTS}/{denied.id}/deny").status_code == 200
    assert cancelled.cancel().status_code in (200, 204)
    assert _ids(owner) == [waiting.id]
    history = owner.get(f"{INBOX}/history").get_json()
    decided = {(e["action"], e["target"]) for e in history["events"]}
    assert ("request.denied", denied.id) in decided
    assert history["people"]["u-owner"]["email"] == "u-owner@example.test"


def test_expired_requests_are_dropped_from_the_workspace_index(
    api_app: Flask, signed_as: Any, redis_client: redis.Redis
) -> None:
    owner = signed_as("u-owner", "t-acme", "owner")
    cli = Cli.start(api_app.test_client(), bundle="production/api")
    key = store.tenant_pending_key("t-acme")
    later = time.time() + 24 * 3600  # a clock past every request's expiry
    assert store.pending_of_tenant(redis_client, "t-acme", later, 10) == []  # hidden at once
    # the sweep removes it (counting its address down), and the workspace from the directory
    assert store.prune_pending(redis_client, later, 10) == [cli.id]
    assert redis_client.zcard(key) == 0 and redis_client.zcard(store.PENDING_TENANTS) == 0
    assert cli.id not in _ids(owner)


def test_history_limit_is_validated(signed_as: Any) -> None:
    owner = signed_as("u-owner", "t-acme", "owner")
    response = owner.get(f"{INBOX}/history?limit=0")
    assert response.status_code == 400
    assert response.get_json()["error"] == "validation_error"


def test_k_of_n_shows_approvals_so_far_and_a_released_request_leaves(
    api_app: Flask, signed_as: Any
) -> None:
    owner = signed_as("u-owner", "t-acme", "owner")
    second = signed_as("u-second", "t-acme", "admin")
    bundle_id = seed_bundle("t-acme", "production/api", [SeedKey("API_KEY", "sk-k-of-n")])
    rule = {"min_role": "member", "approvals_required": 2}
    assert owner.put(f"/api/v1/bundles/{bundle_id}/approvers", rule).status_code == 200
    cli = Cli.start(api_app.test_client(), bundle="production/api")
    choice = {"bundle_id": bundle_id, "include_keys": ["API_KEY"]}
    first = owner.post(f"{REQUESTS}/{cli.id}/encrypt-from-bundle", json=choice)
    assert first.status_code == 202, first.get_json()
    [item] = owner.get(INBOX).get_json()["requests"]
    assert (item["approvals"], item["approvals_required"]) == (1, 2)
    # the second approval releases it: the request is decided and leaves the inbox
    assert second.post(f"{REQUESTS}/{cli.id}/encrypt-from-bundle", json=choice).status_code in (
        200,
        202,
    )
    assert cli.id not in _ids(owner)
