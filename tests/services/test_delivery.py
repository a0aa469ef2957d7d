"""services.delivery against a real database and Redis: idempotent, re-checking, never leaking."""

from __future__ import annotations

import base64

import pytest
import redis
from flask import Flask

from envcat.core.sealing import encode_public_key, generate_keypair, open_values
from envcat.models import Bundle, BundleKey, Membership, db
from envcat.services import access_requests as store
from envcat.services import delivery
from envcat.services.errors import NotFound, ValidationFailed
from tests.api.test_requests_support import (
    SeedKey,
    audit_actions,
    key_row,
    redis_dump,
    seed_bundle,
)
from tests.support.signed import add_member

TENANT, USER = "t-acme", "u-approver"
KEYS = [
    SeedKey("DATABASE_URL", "postgres://db/app", required=True),
    SeedKey("API_KEY", "sk-canary-3141"),
    SeedKey("DEBUG", "false"),
]


@pytest.fixture
def bundle_id(service_app: Flask) -> str:
    add_member(USER, TENANT, "member")
    return seed_bundle(TENANT, "production/api", KEYS)


def _approved_request(
    r: redis.Redis, bundle_id: str, keys: list[str]
) -> tuple[store.AccessRequest, str, object]:
    private_key = generate_keypair()
    request, token = store.create(r, ttl=60, cli_pub=encode_public_key(private_key))
    record = delivery.approval_record(TENANT, USER, bundle_id, keys)
    assert store.mark_approved(r, request.id, approval=record, at=1.0)
    return request, token, private_key


def _run(request_id: str, bundle_id: str, keys: list[str]) -> bool:
    return delivery.encrypt_from_bundle(request_id, TENANT, USER, bundle_id, keys)


def test_delivers_once_even_when_the_message_runs_twice(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    keys = ["DATABASE_URL", "API_KEY"]
    request, token, private_key = _approved_request(redis_client, bundle_id, keys)
    assert _run(request.id, bundle_id, keys) is True
    stored = redis_client.hget(store.request_key(request.id), "ciphertext")
    assert _run(request.id, bundle_id, keys) is False  # a redelivered message is a no-op
    assert redis_client.hget(store.request_key(request.id), "ciphertext") == stored
    result = store.take(redis_client, request.id, token)
    assert result.status == "ready"
    opened = open_values(private_key, base64.b64decode(result.ciphertext or ""))  # type: ignore[arg-type]
    assert list(opened.items()) == [
        ("DATABASE_URL", "postgres://db/app"),
        ("API_KEY", "sk-canary-3141"),
    ]
    assert _run(request.id, bundle_id, keys) is False  # delivered and gone


def test_a_message_that_differs_from_the_recorded_approval_is_ignored(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    assert _run(request.id, bundle_id, ["DATABASE_URL", "API_KEY"]) is False
    unapproved, _ = store.create(redis_client, ttl=60, cli_pub=request.cli_pub)
    assert _run(unapproved.id, bundle_id, ["DATABASE_URL"]) is False
    for request_id in (request.id, unapproved.id):
        assert store.get(redis_client, request_id).status == "pending"  # type: ignore[union-attr]
    assert audit_actions(TENANT) == []


def _failure(redis_client: redis.Redis, request_id: str) -> str | None:
    assert store.get(redis_client, request_id).status == "failed"  # type: ignore[union-attr]
    return redis_client.hget(store.request_key(request_id), "message")  # type: ignore[return-value]


def test_a_deleted_bundle_fails_the_request(bundle_id: str, redis_client: redis.Redis) -> None:
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    db.session.delete(db.session.get(Bundle, bundle_id))
    db.session.commit()
    assert _run(request.id, bundle_id, ["DATABASE_URL"]) is False
    assert _failure(redis_client, request.id) == "the bundle was deleted after the approval"
    assert audit_actions(TENANT) == [("request.failed", request.id)]


def test_a_detached_key_fails_the_request_naming_it(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    keys = ["DATABASE_URL", "API_KEY"]
    request, _, _ = _approved_request(redis_client, bundle_id, keys)
    db.session.delete(db.session.get(BundleKey, (bundle_id, key_row(TENANT, "API_KEY").id)))
    db.session.commit()
    assert _run(request.id, bundle_id, keys) is False
    assert _failure(redis_client, request.id) == "Not in bundle production/api: API_KEY."


def test_a_key_made_required_after_the_approval_fails_the_request(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    db.session.get(BundleKey, (bundle_id, key_row(TENANT, "DEBUG").id)).required = True  # type: ignore[union-attr]
    db.session.commit()
    assert _run(request.id, bundle_id, ["DATABASE_URL"]) is False
    assert _failure(redis_client, request.id) == "Required keys left out: DEBUG."


def test_an_approver_demoted_since_the_approval_releases_nothing(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    db.session.get(Membership, (USER, TENANT)).role = "viewer"  # type: ignore[union-attr]
    db.session.commit()
    assert _run(request.id, bundle_id, ["DATABASE_URL"]) is False
    assert "no longer has the member role" in (_failure(redis_client, request.id) or "")


def test_an_undecryptable_key_fails_the_request_without_its_value(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    keys = ["DATABASE_URL", "API_KEY"]
    request, _, _ = _approved_request(redis_client, bundle_id, keys)
    key_row(TENANT, "API_KEY").value = key_row(TENANT, "DATABASE_URL").value
    db.session.commit()
    assert _run(request.id, bundle_id, keys) is False
    message = _failure(redis_client, request.id)
    assert message == "the value of API_KEY does not decrypt with the server's keyring"
    dump = redis_dump(redis_client)
    assert "postgres://db/app" not in dump
    assert "sk-canary-3141" not in dump


def test_select_keys_orders_by_bundle_and_refuses_bad_choices(bundle_id: str) -> None:
    selection = delivery.select_keys(TENANT, bundle_id, ["DEBUG", "DATABASE_URL", "DEBUG"])
    assert selection.names == ["DATABASE_URL", "DEBUG"]
    assert selection.bundle_name == "production/api"
    with pytest.raises(NotFound):
        delivery.select_keys("t-other", bundle_id, ["DATABASE_URL"])
    for choice in ([], ["API_KEY"], ["DATABASE_URL", "NOPE"]):
        with pytest.raises(ValidationFailed):
            delivery.select_keys(TENANT, bundle_id, choice)


def test_fail_audits_first_and_reports_whether_the_request_was_pending(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    assert delivery.fail_unexpectedly(request.id, TENANT, USER) is True
    assert _failure(redis_client, request.id) == delivery.INTERNAL_FAILURE
    assert delivery.fail(request.id, TENANT, USER, "again") is False
    assert audit_actions(TENANT) == [("request.failed", request.id)] * 2
