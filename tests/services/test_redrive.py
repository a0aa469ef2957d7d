"""services.redrive: approvals a Redis failover left recorded but not carried out."""

from __future__ import annotations

import time

import pytest
import redis
from flask import Flask

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.services.access_requests import delivery, store
from envcat.services.access_requests.redrive import REDRIVE_AFTER_SECONDS, stuck_approvals
from tests.support.api import SeedKey, seed_bundle
from tests.support.envelopes import open_delivery
from tests.support.requests import record_approval, stored_request
from tests.support.signed import add_member

TENANT, USER = "t-redrive", "u-approver"
LATER = REDRIVE_AFTER_SECONDS + 1  # the clock is passed in: nothing sleeps


@pytest.fixture
def bundle_id(service_app: Flask) -> str:
    add_member(USER, TENANT, "member")
    return seed_bundle(TENANT, "production/api", [SeedKey("TOKEN", "redriven")])


def test_only_old_undelivered_approvals_are_sent_again_once_per_window(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    private_key = generate_keypair()
    stuck, token = stored_request(
        redis_client, tenant_id=TENANT, cli_pub=encode_public_key(private_key)
    )
    mac = record_approval(redis_client, stuck, USER, bundle_id, ["TOKEN"])
    undecided, _ = stored_request(redis_client, tenant_id=TENANT)
    delivered, _ = stored_request(redis_client, tenant_id=TENANT)
    record_approval(redis_client, delivered, USER, bundle_id, ["TOKEN"])
    stored = store.get(redis_client, delivered.id)
    assert stored is not None
    assert delivery.encrypt_from_bundle(delivered.id, stored.approval_mac)

    assert stuck_approvals(time.time()) == []  # approved just now: its task is on its way
    assert stuck_approvals(time.time() + LATER) == [(stuck.id, mac)]
    assert stuck_approvals(time.time() + LATER) == []  # already sent again in this window
    assert undecided.id not in str(stuck_approvals(time.time() + 3 * LATER))

    # What the beat task then publishes is an ordinary, MAC-checked message: one delivery.
    assert delivery.encrypt_from_bundle(stuck.id, mac) is True
    assert delivery.encrypt_from_bundle(stuck.id, mac) is False
    result = store.take(redis_client, stuck.id, token)
    assert open_delivery(private_key, result.ciphertext or "") == {"TOKEN": "redriven"}


def test_a_forged_approval_mac_is_sent_again_but_delivers_nothing(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, token = stored_request(redis_client, tenant_id=TENANT)
    record_approval(redis_client, request, USER, bundle_id, ["TOKEN"])
    redis_client.hset(store.request_key(request.id), "am", "forged-by-a-redis-writer")
    [(request_id, mac)] = stuck_approvals(time.time() + LATER)
    assert (request_id, mac) == (request.id, "forged-by-a-redis-writer")
    delivery.encrypt_from_bundle(request_id, mac)  # the worker checks the MAC first
    assert store.take(redis_client, request.id, token).status != "ready"


def test_every_page_of_the_pending_index_is_read(bundle_id: str, redis_client: redis.Redis) -> None:
    requests = [stored_request(redis_client, tenant_id=TENANT)[0] for _ in range(5)]
    for request in requests[3:]:  # the stuck ones sit past the first pages
        record_approval(redis_client, request, USER, bundle_id, ["TOKEN"])
    found = stuck_approvals(time.time() + LATER, batch_size=2)
    assert sorted(request_id for request_id, _ in found) == sorted(r.id for r in requests[3:])
