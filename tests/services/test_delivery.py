"""services.delivery against a real database and Redis: idempotent, re-checking, never leaking."""

from __future__ import annotations

import base64

import pytest
import redis
from flask import Flask

from envcat.core.envelope import EnvelopeError, SigningKeyring, generate_seed, open_envelope
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import Bundle, BundleApprovers, BundleKey, Membership, db
from envcat.services.access_requests import delivery, store
from envcat.services.errors import NotFound, ValidationFailed
from tests.support import present
from tests.support.api import (
    SeedKey,
    audit_actions,
    key_row,
    redis_dump,
    seed_bundle,
)
from tests.support.envelopes import TEST_SERVER_KEY, open_verified
from tests.support.requests import record_approval, stored_request
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


APPROVAL_MACS: dict[str, str] = {}


def _approved_request(
    r: redis.Redis, bundle_id: str, keys: list[str]
) -> tuple[store.AccessRequest, str, object]:
    private_key = generate_keypair()
    request, token = stored_request(r, tenant_id=TENANT, cli_pub=encode_public_key(private_key))
    APPROVAL_MACS[request.id] = record_approval(r, request, USER, bundle_id, keys)
    return request, token, private_key


def _run(request_id: str, bundle_id: str = "", keys: list[str] | None = None) -> bool:
    # bundle and keys come from the MACed record in Redis, never from the message
    return delivery.encrypt_from_bundle(request_id, APPROVAL_MACS.get(request_id, ""))


def test_delivers_once_even_when_the_message_runs_twice(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    keys = ["DATABASE_URL", "API_KEY"]
    request, token, private_key = _approved_request(redis_client, bundle_id, keys)
    assert _run(request.id, bundle_id, keys) is True
    stored = redis_client.hget(store.request_key(request.id), "ct")
    assert _run(request.id, bundle_id, keys) is False  # a redelivered message is a no-op
    assert redis_client.hget(store.request_key(request.id), "ct") == stored
    result = store.take(redis_client, request.id, token)
    assert result.status == "ready"
    envelope = open_verified(private_key, result.ciphertext or "")  # type: ignore[arg-type]  # a PrivateKey
    assert list(envelope.keys.items()) == [
        ("DATABASE_URL", "postgres://db/app"),
        ("API_KEY", "sk-canary-3141"),
    ]
    assert (envelope.request_id, envelope.cli_public_key) == (request.id, request.cli_pub)
    assert (envelope.workspace_id, envelope.workspace_slug) == (TENANT, "t-acme")
    assert (envelope.bundle_id, envelope.bundle_name) == (bundle_id, "production/api")
    assert (envelope.approver_id, envelope.approver_email) == (USER, f"{USER}@example.test")
    assert _run(request.id, bundle_id, keys) is False  # delivered and gone


def test_the_envelope_is_signed_by_the_server_key_only(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, token, private_key = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    assert _run(request.id) is True
    sealed = base64.b64decode(store.take(redis_client, request.id, token).ciphertext or "")
    signed = open_envelope(private_key, sealed)  # type: ignore[arg-type]  # a PrivateKey
    stranger = SigningKeyring.from_setting(generate_seed()).public_keys[0]
    with pytest.raises(EnvelopeError, match="not signed by the trusted server key"):
        signed.verified_by(stranger)
    tampered = type(signed)(signed.payload.replace(b"postgres", b"postgrez"), signed.signatures)
    with pytest.raises(EnvelopeError):
        tampered.verified_by(TEST_SERVER_KEY)
    assert dict(signed.verified_by(TEST_SERVER_KEY).keys) == {"DATABASE_URL": "postgres://db/app"}


def test_a_message_without_the_api_mac_is_refused_before_any_key_is_read(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    assert delivery.encrypt_from_bundle(request.id, "forged-mac") is False
    assert _failure(redis_client, request.id) == delivery.TAMPERED
    assert audit_actions(TENANT) == [("request.integrity_failed", request.id)]
    unapproved, _ = stored_request(redis_client, tenant_id=TENANT, cli_pub=request.cli_pub)
    assert delivery.encrypt_from_bundle(unapproved.id, APPROVAL_MACS[request.id]) is False
    assert present(store.get(redis_client, unapproved.id)).status == "failed"


def test_a_forged_redis_record_and_task_deliver_nothing(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    """Issue #12 finding 1: a writer to Redis rewrites the approval and the CLI key."""
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    attacker = generate_keypair()
    forged = store.Approval(TENANT, USER, bundle_id, ("DATABASE_URL", "API_KEY"), 1.0)
    redis_client.hset(
        store.request_key(request.id),
        mapping={"a": forged.to_json(), "pub": encode_public_key(attacker)},
    )
    # the attacker replays the genuine task message (the MAC the api gave the real approval)
    assert delivery.encrypt_from_bundle(request.id, APPROVAL_MACS[request.id]) is False
    assert _failure(redis_client, request.id) == delivery.TAMPERED
    assert redis_client.hget(store.request_key(request.id), "ct") is None


def _failure(redis_client: redis.Redis, request_id: str) -> str | None:
    assert present(store.get(redis_client, request_id)).status == "failed"
    return redis_client.hget(store.request_key(request_id), "msg")  # type: ignore[return-value]  # a decode_responses client


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
    present(db.session.get(BundleKey, (bundle_id, key_row(TENANT, "DEBUG").id))).required = True
    db.session.commit()
    assert _run(request.id, bundle_id, ["DATABASE_URL"]) is False
    assert _failure(redis_client, request.id) == "Required keys left out: DEBUG."


def test_an_approver_demoted_since_the_approval_releases_nothing(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    present(db.session.get(Membership, (USER, TENANT))).role = "viewer"
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


def test_another_tenants_key_attached_to_a_bundle_is_never_selected(bundle_id: str) -> None:
    """A row of bundle_keys pointing at another workspace's key (a bad write, a restore
    gone wrong) releases nothing of it: the keys' tenant is checked as rows are read."""
    seed_bundle("t-other", "other/app", [SeedKey("OTHER_SECRET", "other-canary-2718")])
    foreign = key_row("t-other", "OTHER_SECRET")
    db.session.add(BundleKey(bundle_id=bundle_id, key_id=foreign.id, position=9))
    db.session.commit()
    selection = delivery.select_keys(TENANT, bundle_id, ["DATABASE_URL"])
    assert selection.names == ["DATABASE_URL"]
    with pytest.raises(ValidationFailed, match="OTHER_SECRET"):
        delivery.select_keys(TENANT, bundle_id, ["DATABASE_URL", "OTHER_SECRET"])


def test_fail_audits_first_and_reports_whether_the_request_was_pending(
    bundle_id: str, redis_client: redis.Redis
) -> None:
    request, _, _ = _approved_request(redis_client, bundle_id, ["DATABASE_URL"])
    assert delivery.fail_unexpectedly(request.id) is True
    assert _failure(redis_client, request.id) == delivery.INTERNAL_FAILURE
    assert delivery.fail(request.id, TENANT, USER, "again") is False
    assert audit_actions(TENANT) == [("request.failed", request.id)] * 2


@pytest.mark.parametrize(("reason", "stated"), [("", 2), ("prod is down, nobody answers", 1)])
def test_the_envelope_states_the_rules_k_except_for_break_glass(
    bundle_id: str, redis_client: redis.Redis, reason: str, stated: int
) -> None:
    """A 2-of-n bundle's delivery says the rule wanted 2 (issue #20); a break-glass release
    (issue #17) happened on one owner's word and says 1 with its reason, so only the
    terminal's own `min_approvals` can hold it back."""
    db.session.add(
        BundleApprovers(
            bundle_id=bundle_id, tenant_id=TENANT, min_role="member", approvals_required=2
        )
    )
    db.session.commit()
    private_key = generate_keypair()
    request, token = stored_request(
        redis_client, tenant_id=TENANT, cli_pub=encode_public_key(private_key)
    )
    mac = record_approval(
        redis_client, request, USER, bundle_id, ["DATABASE_URL"], break_glass=reason
    )
    assert delivery.encrypt_from_bundle(request.id, mac) is True
    result = store.take(redis_client, request.id, token)
    envelope = open_verified(private_key, result.ciphertext or "")
    assert envelope.approvals_required == stated
    assert envelope.break_glass == ({"reason": reason} if reason else None)
