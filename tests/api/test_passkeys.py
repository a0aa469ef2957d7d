"""Approver passkeys at the api (issue #20): registration, ownership, policy, verification.

Software authenticators (tests/support/passkeys.py) make real attestations and
assertions against the api's relying party (PUBLIC_URL http://envcat.test); the
webauthn library on the server checks them as it checks a browser's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from envcat.core.approval_statement import ApprovalStatement
from envcat.core.passkeys import b64url
from envcat.services.access_requests import store
from envcat.services.passkeys import CHALLENGE_TTL_SECONDS, _challenge_key
from envcat.services.runtime import current
from tests.support.api import REQUESTS, Cli, SeedKey, audit_actions, seed_bundle
from tests.support.passkeys import SoftPasskey

TENANT = "t-acme"
ORIGIN, RP_ID = "http://envcat.test", "envcat.test"
KEYS = [SeedKey("DATABASE_URL", "postgres://canary-db"), SeedKey("API_KEY", "canary-key")]


def register(signed: Any, key: SoftPasskey, name: str = "laptop") -> Any:
    options = signed.post("/api/v1/passkey-challenges").get_json()["options"]
    credential = key.registration(options["challenge"], origin=ORIGIN, rp_id=RP_ID)
    return signed.post("/api/v1/passkeys", json={"name": name, "credential": credential})


def statement(cli: Cli, bundle_id: str, keys: list[str], **changes: Any) -> ApprovalStatement:
    request = store.get(current().redis, cli.id)
    assert request is not None
    fields: dict[str, Any] = {
        "request_id": cli.id,
        "cli_public_key": cli.public_key,
        "workspace": request.workspace,
        "bundle_id": bundle_id,
        "keys": keys,
        "user_code": request.user_code,
        "decided_at": int(request.created),
    }
    return ApprovalStatement.of(**{**fields, **changes})


def approve(signed: Any, cli: Cli, bundle_id: str, keys: list[str], passkey: Any = None) -> Any:
    body: dict[str, Any] = {"bundle_id": bundle_id, "include_keys": keys}
    if passkey is not None:
        body["passkey"] = passkey
    return signed.post(f"{REQUESTS}/{cli.id}/encrypt-from-bundle", json=body)


def test_registration_needs_the_users_own_one_use_challenge(
    signed_as: Any, redis_client: redis.Redis
) -> None:
    ada, bob = signed_as("u-ada", TENANT), signed_as("u-bob", TENANT, "member")
    key = SoftPasskey.es256("ada-key")
    options = ada.post("/api/v1/passkey-challenges").get_json()["options"]
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert {p["alg"] for p in options["pubKeyCredParams"]} == {-7, -8}
    assert options["rp"]["id"] == RP_ID
    assert 0 < redis_client.ttl(_challenge_key("u-ada")) <= CHALLENGE_TTL_SECONDS
    credential = key.registration(options["challenge"], origin=ORIGIN, rp_id=RP_ID)
    # bob cannot finish ada's ceremony: the challenge is kept under ada's id
    stolen = bob.post("/api/v1/passkeys", json={"name": "x", "credential": credential})
    assert stolen.status_code == 400
    made = ada.post("/api/v1/passkeys", json={"name": "laptop", "credential": credential})
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["algorithm"] == "ES256"
    replayed = ada.post("/api/v1/passkeys", json={"name": "again", "credential": credential})
    assert replayed.status_code == 400  # the challenge was used up
    assert "expired" in replayed.get_json()["message"]
    # another origin, or no user verification, is refused
    options = ada.post("/api/v1/passkey-challenges").get_json()["options"]
    other = SoftPasskey.ed25519("ada-2").registration(
        options["challenge"], origin="https://evil.example", rp_id=RP_ID
    )
    assert ada.post("/api/v1/passkeys", json={"name": "x", "credential": other}).status_code == 400
    assert (
        audit_actions(TENANT).count(("passkey.registered", f"passkey:{made.get_json()['id']}")) == 1
    )


def test_passkeys_are_listed_renamed_and_removed_by_their_owner_only(signed_as: Any) -> None:
    ada, bob = signed_as("u-ada", TENANT), signed_as("u-bob", TENANT, "member")
    made = register(ada, SoftPasskey.ed25519("ada-key")).get_json()
    assert made["algorithm"] == "EdDSA" and made["fingerprint"].startswith("SHA256:")
    passkey_id = made["id"]
    assert bob.get("/api/v1/passkeys").get_json() == {"passkeys": []}
    path = f"/api/v1/passkeys/{passkey_id}"
    assert bob.patch(path, json={"name": "mine"}).status_code == 404
    assert bob.delete(path).status_code == 404
    assert ada.patch(path, json={"name": ""}).status_code == 400
    assert ada.patch(path, json={"name": "YubiKey"}).get_json()["name"] == "YubiKey"
    assert [k["name"] for k in ada.get("/api/v1/passkeys").get_json()["passkeys"]] == ["YubiKey"]
    assert ada.delete(path).status_code == 204
    assert ada.get("/api/v1/passkeys").get_json() == {"passkeys": []}
    assert ("passkey.removed", f"passkey:{passkey_id}") in audit_actions(TENANT)


def test_the_public_approver_list_shows_approving_members_keys_without_emails(
    api_client: FlaskClient, signed_as: Any
) -> None:
    register(signed_as("u-ada", TENANT), SoftPasskey.es256("ada-key"), "ada laptop")
    register(signed_as("u-vic", TENANT, "viewer"), SoftPasskey.es256("vic-key"), "viewer key")
    register(signed_as("u-eve", "t-other"), SoftPasskey.es256("eve-key"), "eve key")
    reply = api_client.get(f"/api/v1/workspaces/{TENANT}/approvers")
    assert reply.status_code == 200
    listed = reply.get_json()["approvers"]
    assert [item["name"] for item in listed] == ["ada laptop"]
    assert "example.test" not in json.dumps(reply.get_json())
    assert api_client.get("/api/v1/workspaces/no-such-ws/approvers").status_code == 404


def test_require_passkey_is_owner_only_and_refuses_approvals_without_one(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    owner, member = signed_as("u-owner", TENANT), signed_as("u-mem", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "prod/api", KEYS)
    assert (
        member.call("PUT", "/api/v1/workspace/policy", {"require_passkey": True}).status_code == 403
    )
    on = owner.call("PUT", "/api/v1/workspace/policy", {"require_passkey": True})
    policy = {"require_passkey": True, "require_phrase": False}  # the other setting kept
    assert on.get_json() == policy
    assert member.get("/api/v1/workspace/policy").get_json() == policy
    cli = Cli.start(api_client, TENANT)
    refused = approve(member, cli, bundle_id, ["DATABASE_URL"])
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "passkey_required"
    assert "requires a passkey" in refused.get_json()["message"]
    # the approver has none: even the statement is refused, saying what to do
    asked = member.post(
        f"{REQUESTS}/{cli.id}/approval-statement",
        json={"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]},
    )
    assert asked.status_code == 403 and "account page" in asked.get_json()["message"]
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is None and stored.status == "pending"
    key = SoftPasskey.es256("mem-key")
    register(member, key)
    signed = key.assertion(statement(cli, bundle_id, ["DATABASE_URL"]), origin=ORIGIN, rp_id=RP_ID)
    assert approve(member, cli, bundle_id, ["DATABASE_URL"], signed).status_code == 202


def test_the_statement_endpoint_states_what_the_passkey_must_sign(
    api_client: FlaskClient, signed_as: Any
) -> None:
    member = signed_as("u-mem", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "prod/api", KEYS)
    key = SoftPasskey.es256("mem-key")
    made = register(member, key).get_json()
    cli = Cli.start(api_client, TENANT)
    reply = member.post(
        f"{REQUESTS}/{cli.id}/approval-statement",
        json={"bundle_id": bundle_id, "include_keys": ["API_KEY", "DATABASE_URL"]},
    ).get_json()
    given = ApprovalStatement.from_dict(reply["statement"])
    assert given == statement(
        cli, bundle_id, ["API_KEY", "DATABASE_URL"], decided_at=given.decided_at
    )
    assert reply["rp_id"] == RP_ID and reply["allow_credentials"] == [made["credential_id"]]
    assert reply["challenge"] == b64url(given.challenge())


def test_the_statement_of_a_break_glass_release_carries_its_reason(
    api_client: FlaskClient, signed_as: Any
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "prod/api", KEYS)
    register(owner, SoftPasskey.es256("owner-key"))
    cli = Cli.start(api_client, TENANT)
    path = f"{REQUESTS}/{cli.id}/approval-statement"
    body = {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]}
    reply = owner.post(path, json={**body, "reason": " INC-42 checkout down "}).get_json()
    given = ApprovalStatement.from_dict(reply["statement"])
    assert reply["statement"]["break_glass"] == "INC-42 checkout down"  # as the release reads it
    assert given == statement(
        cli,
        bundle_id,
        ["DATABASE_URL"],
        decided_at=given.decided_at,
        break_glass="INC-42 checkout down",
    )
    assert reply["challenge"] == b64url(given.challenge())
    ordinary = owner.post(path, json=body).get_json()  # no reason: the statement has no field
    assert "break_glass" not in ordinary["statement"]
    for reason in ("", "   ", "x" * 501, "line\nbreak", 7):
        refused = owner.post(path, json={**body, "reason": reason})
        assert refused.status_code == 400, reason
        assert refused.get_json()["error"] == "validation_error"


@pytest.mark.parametrize(
    "attack",
    [
        "another_request",
        "fewer_keys",
        "another_bundle",
        "other_origin",
        "no_user_verification",
        "someone_elses_passkey",
        "stale",
        "counter_replay",
    ],
)
def test_the_api_refuses_an_assertion_that_is_not_exactly_this_approval(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis, attack: str
) -> None:
    member, bob = signed_as("u-mem", TENANT, "member"), signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "prod/api", KEYS)
    other_bundle = "5b1f0c9e-0000-4000-8000-000000000000"
    key, bobs = SoftPasskey.es256("mem-key"), SoftPasskey.es256("bob-key")
    register(member, key)
    register(bob, bobs)
    cli, other = Cli.start(api_client, TENANT), Cli.start(api_client, TENANT)
    keys = ["API_KEY", "DATABASE_URL"]
    good = statement(cli, bundle_id, keys)
    options: dict[str, Any] = {"origin": ORIGIN, "rp_id": RP_ID}
    signer, signed_statement = key, good
    if attack == "another_request":
        signed_statement = statement(other, bundle_id, keys)
    elif attack == "fewer_keys":
        signed_statement = statement(cli, bundle_id, ["DATABASE_URL"])
    elif attack == "another_bundle":
        signed_statement = statement(cli, other_bundle, keys)
    elif attack == "other_origin":
        options["origin"] = "https://evil.example"
    elif attack == "no_user_verification":
        options["user_verified"] = False
    elif attack == "someone_elses_passkey":
        signer = bobs  # a valid passkey, but bob's, and the member is the caller
    elif attack == "stale":
        signed_statement = statement(cli, bundle_id, keys, decided_at=good.decided_at - 3600)
    elif attack == "counter_replay":
        first = key.assertion(statement(other, bundle_id, keys), **options)
        assert approve(member, other, bundle_id, keys, first).status_code == 202
        key.counter = 0  # the next assertion repeats counter 1: a cloned authenticator
    passkey = signer.assertion(signed_statement, **options)
    refused = approve(member, cli, bundle_id, keys, passkey)
    assert refused.status_code == 400, refused.get_json()
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is None  # nothing recorded, still pending
    assert ("request.approved", cli.id) not in audit_actions(TENANT)


def test_an_accepted_assertion_is_recorded_under_the_approval_mac(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    member = signed_as("u-mem", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "prod/api", KEYS)
    key = SoftPasskey.ed25519("mem-key")
    register(member, key)
    cli = Cli.start(api_client, TENANT)
    passkey = key.assertion(statement(cli, bundle_id, ["DATABASE_URL"]), origin=ORIGIN, rp_id=RP_ID)
    assert approve(member, cli, bundle_id, ["DATABASE_URL"], passkey).status_code == 202
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is not None
    proof = json.loads(stored.approval.passkey)
    assert proof["credential_id"] == key.credential_id
    assert proof["statement"]["keys"] == ["DATABASE_URL"]
    assert proof["approver_email"] == "u-mem@example.test"
    # the MAC covers the proof: a Redis writer who strips it breaks the approval's MAC
    from envcat.services import integrity

    stripped = store.Approval(**{**stored.approval.__dict__, "passkey": ""})
    assert integrity.is_approval_intact(stored, stored.approval, stored.approval_mac)
    assert not integrity.is_approval_intact(stored, stripped, stored.approval_mac)
    assert ("request.approved", cli.id) in audit_actions(TENANT)


def test_k_of_n_keeps_each_voters_proof_under_the_vote_mac(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    from envcat.services.approvers import votes_key

    owner = signed_as("u-owner", TENANT)
    ada, bob = signed_as("u-ada", TENANT, "member"), signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "prod/api", KEYS)
    rule = {"min_role": "member", "user_ids": [], "approvals_required": 2}
    assert owner.call("PUT", f"/api/v1/bundles/{bundle_id}/approvers", rule).status_code == 200
    adas, bobs = SoftPasskey.es256("ada-key"), SoftPasskey.ed25519("bob-key")
    register(ada, adas)
    register(bob, bobs)
    keys, options = ["API_KEY", "DATABASE_URL"], {"origin": ORIGIN, "rp_id": RP_ID}
    cli, tampered = Cli.start(api_client, TENANT), Cli.start(api_client, TENANT)
    for request in (cli, tampered):
        voted = approve(
            ada,
            request,
            bundle_id,
            keys,
            adas.assertion(statement(request, bundle_id, keys), **options),
        )
        assert voted.get_json()["status"] == "awaiting_approvals", voted.get_json()
    # bob decided a second earlier than ada (each statement carries its own decided_at)
    earlier = statement(cli, bundle_id, keys)
    earlier = statement(cli, bundle_id, keys, decided_at=earlier.decided_at - 1)
    assert approve(bob, cli, bundle_id, keys, bobs.assertion(earlier, **options)).status_code == 202
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is not None
    proofs = json.loads(stored.approval.passkey)  # every voter's, by decision time
    assert [p["credential_id"] for p in proofs] == [bobs.credential_id, adas.credential_id]
    # a Redis writer swaps ada's recorded proof (for bob's): her vote stops counting
    vote = json.loads(redis_client.hget(votes_key(tampered.id), "u-ada") or b"{}")
    vote["passkey"] = json.dumps(proofs[0])
    redis_client.hset(votes_key(tampered.id), "u-ada", json.dumps(vote))
    signed = bobs.assertion(statement(tampered, bundle_id, keys), **options)
    answered = approve(bob, tampered, bundle_id, keys, signed).get_json()
    assert answered["status"] == "awaiting_approvals" and answered["approvals"] == 1
    still = store.get(redis_client, tampered.id)
    assert still is not None and still.approval is None
