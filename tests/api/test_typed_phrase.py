"""Approvers type the verification phrase (RFC 8628 §5.4), a workspace policy, through the
real api on SQLite and PostgreSQL.

With `require_phrase` on, no reply the browser can reach carries a pending request's
phrase, and every person's approval (ordinary, each k-of-n vote, break-glass, a terminal
sign-in, the statement a passkey would sign) must carry the phrase the terminal shows: a
missing one is 400 `phrase_required`, a wrong one 403 `phrase_mismatch`, and either
leaves the request pending with nothing recorded, queued or audited. Workload and
service-token approvals have no person and are not asked. The browser attack is
replayed in tests/bff/test_browser_typed_phrase.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import func, select

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.models import AuditEvent, UserToken, db
from envcat.services.access_requests import store
from envcat.services.runtime import current
from tests.api.test_passkeys import RP_ID, register
from tests.support.api import REQUESTS, Cli, SeedKey, audit_actions, seed_bundle
from tests.support.passkeys import SoftPasskey
from tests.support.settings import make_settings

TENANT, OTHER = "t-acme", "t-other"
POLICY = "/api/v1/workspace/policy"
KEYS = [SeedKey("API_KEY", "sk-canary-typed-phrase")]


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """Both database backends for every test of this module."""
    return make_settings(database_url, redis_url, broker_url)


@pytest.fixture
def broker(broker_url: str) -> Any:
    client = redis.Redis.from_url(broker_url)
    yield client
    client.close()


def _require_phrase(owner: Any) -> None:
    on = owner.call("PUT", POLICY, {"require_phrase": True})
    assert on.status_code == 200, on.get_json()


def _phrase(cli: Cli) -> str:
    """The phrase the terminal printed (the create reply's `user_code`)."""
    assert cli.created is not None
    return str(cli.created["user_code"])


def _as_typed(phrase: str) -> str:
    """What a person types reading it aloud: lower case, a space for the hyphen."""
    return phrase.lower().replace("-", " ")


def _wrong(phrase: str) -> str:
    return ("B" if phrase[0] != "B" else "C") + phrase[1:]


def _approve(signed: Any, cli: Cli, bundle_id: str, **extra: Any) -> Any:
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"], **extra}
    return signed.post(f"{REQUESTS}/{cli.id}/encrypt-from-bundle", json=body)


def _break_glass(signed: Any, cli: Cli, bundle_id: str, **extra: Any) -> Any:
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"], "reason": "INC-7", **extra}
    return signed.post(f"{REQUESTS}/{cli.id}/break-glass", json=body)


def _assert_refused_leaving_nothing(
    reply: Any, status: int, code: str, cli: Cli, broker: Any, queued: int
) -> None:
    assert (reply.status_code, reply.get_json()["error"]) == (status, code), reply.get_json()
    stored = store.get(current().redis, cli.id)
    assert stored is not None and stored.status == "pending" and stored.approval is None
    assert broker.llen("approvals") == queued  # nothing queued for a worker
    assert not [a for a, target in audit_actions(TENANT) if target == cli.id]  # nor audited


def test_the_policy_is_owner_only_audited_partial_and_tenant_scoped(
    api_client: FlaskClient, signed_as: Any
) -> None:
    owner, member = signed_as("u-owner", TENANT), signed_as("u-mem", TENANT, "member")
    other_owner = signed_as("u-other", OTHER)
    assert owner.get(POLICY).get_json() == {"require_passkey": False, "require_phrase": False}
    assert member.call("PUT", POLICY, {"require_phrase": True}).status_code == 403
    assert owner.call("PUT", POLICY, {}).status_code == 400  # nothing to change
    assert owner.call("PUT", POLICY, {"require_phrase": "yes"}).status_code == 400
    on = owner.call("PUT", POLICY, {"require_phrase": True})
    assert on.get_json() == {"require_passkey": False, "require_phrase": True}
    # a client that only knows require_passkey leaves the phrase setting as it is
    both = owner.call("PUT", POLICY, {"require_passkey": True})
    assert both.get_json() == {"require_passkey": True, "require_phrase": True}
    assert member.get(POLICY).get_json() == {"require_passkey": True, "require_phrase": True}
    db.session.expire_all()
    changes = db.session.execute(
        select(AuditEvent.actor, AuditEvent.details)
        .where(AuditEvent.tenant_id == TENANT, AuditEvent.action == "workspace.policy_changed")
        .order_by(AuditEvent.id)
    ).all()
    assert [(actor, details) for actor, details in changes] == [
        ("u-owner", {"require_passkey": False, "require_phrase": True}),
        ("u-owner", {"require_passkey": True, "require_phrase": True}),
    ]
    # another workspace's owner changes only their own workspace
    assert other_owner.get(POLICY).get_json()["require_phrase"] is False
    assert other_owner.call("PUT", POLICY, {"require_phrase": False}).status_code == 200
    assert owner.get(POLICY).get_json()["require_phrase"] is True
    # and our policy does not touch their requests: approved without typing anything
    theirs = seed_bundle(OTHER, "production/api", KEYS)
    cli = Cli.start(api_client, OTHER)
    context = api_client.get(f"{REQUESTS}/{cli.id}/context").get_json()
    assert context["user_code"] == _phrase(cli)
    assert _approve(other_owner, cli, theirs).status_code == 202


def test_a_missing_or_wrong_phrase_records_nothing_and_the_typed_one_approves(
    api_client: FlaskClient, signed_as: Any, broker: Any
) -> None:
    owner, member = signed_as("u-owner", TENANT), signed_as("u-mem", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    _require_phrase(owner)
    cli = Cli.start(api_client)
    phrase = _phrase(cli)
    assert cli.created is not None and phrase  # the terminal still prints it
    # no reply a browser can reach carries it: the public context, the inbox
    context = api_client.get(f"{REQUESTS}/{cli.id}/context")
    assert context.status_code == 200 and context.get_json()["user_code"] is None
    assert phrase not in context.get_data(as_text=True)
    [pending] = member.get("/api/v1/inbox").get_json()["requests"]
    assert pending["id"] == cli.id and pending["user_code"] is None
    queued = broker.llen("approvals")

    missing = _approve(member, cli, bundle_id)
    _assert_refused_leaving_nothing(missing, 400, "phrase_required", cli, broker, queued)
    blank = _approve(member, cli, bundle_id, phrase="  ")
    _assert_refused_leaving_nothing(blank, 400, "phrase_required", cli, broker, queued)
    wrong = _approve(member, cli, bundle_id, phrase=_wrong(phrase))
    _assert_refused_leaving_nothing(wrong, 403, "phrase_mismatch", cli, broker, queued)
    assert wrong.get_json()["message"].startswith(
        "That is not the phrase this request's terminal shows"
    )
    too_long = _approve(member, cli, bundle_id, phrase="X" * 33)
    _assert_refused_leaving_nothing(too_long, 400, "validation_error", cli, broker, queued)
    assert "X" * 33 not in too_long.get_data(as_text=True)  # the input is not echoed

    typed = _approve(member, cli, bundle_id, phrase=_as_typed(phrase))
    assert typed.status_code == 202, typed.get_json()
    assert broker.llen("approvals") == queued + 1
    assert ("request.approved", cli.id) in audit_actions(TENANT)


def test_each_k_of_n_voter_types_the_phrase(
    api_client: FlaskClient, signed_as: Any, broker: Any
) -> None:
    owner = signed_as("u-owner", TENANT)
    alice, bob = signed_as("u-alice", TENANT, "member"), signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    rule = {"min_role": None, "user_ids": ["u-alice", "u-bob"], "approvals_required": 2}
    assert owner.put(f"/api/v1/bundles/{bundle_id}/approvers", json=rule).status_code == 200
    _require_phrase(owner)
    cli = Cli.start(api_client)
    phrase, queued = _phrase(cli), broker.llen("approvals")
    refused = _approve(alice, cli, bundle_id)
    _assert_refused_leaving_nothing(refused, 400, "phrase_required", cli, broker, queued)
    first = _approve(alice, cli, bundle_id, phrase=phrase)
    assert first.status_code == 202 and first.get_json()["approvals"] == 1, first.get_json()
    # the second voter must type it too: a wrong one is not a vote
    second_wrong = _approve(bob, cli, bundle_id, phrase=_wrong(phrase))
    assert (second_wrong.status_code, second_wrong.get_json()["error"]) == (403, "phrase_mismatch")
    assert cli.wait().get_json()["approvals"] == 1
    assert broker.llen("approvals") == queued
    assert ("request.approved", cli.id) not in audit_actions(TENANT)
    second = _approve(bob, cli, bundle_id, phrase=_as_typed(phrase))
    assert second.status_code == 202 and second.get_json() == {"ok": True}
    assert broker.llen("approvals") == queued + 1


def test_break_glass_types_the_phrase(api_client: FlaskClient, signed_as: Any, broker: Any) -> None:
    owner = signed_as("u-owner", TENANT)
    signed_as("u-alice", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    rule = {"min_role": None, "user_ids": ["u-alice"]}  # the owner may only break glass
    assert owner.put(f"/api/v1/bundles/{bundle_id}/approvers", json=rule).status_code == 200
    _require_phrase(owner)
    cli = Cli.start(api_client)
    phrase, queued = _phrase(cli), broker.llen("approvals")
    missing = _break_glass(owner, cli, bundle_id)
    _assert_refused_leaving_nothing(missing, 400, "phrase_required", cli, broker, queued)
    wrong = _break_glass(owner, cli, bundle_id, phrase=_wrong(phrase))
    _assert_refused_leaving_nothing(wrong, 403, "phrase_mismatch", cli, broker, queued)
    released = _break_glass(owner, cli, bundle_id, phrase=_as_typed(phrase))
    assert released.status_code == 202, released.get_json()
    assert ("request.break_glass", cli.id) in audit_actions(TENANT)


def test_a_terminal_sign_in_types_the_phrase(api_client: FlaskClient, signed_as: Any) -> None:
    owner, member = signed_as("u-owner", TENANT), signed_as("u-mem", TENANT, "member")
    _require_phrase(owner)
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": TENANT}
    login = api_client.post("/api/v1/logins", json=body).get_json()
    path = f"{REQUESTS}/{login['id']}/sign-in"
    assert api_client.get(f"{REQUESTS}/{login['id']}/context").get_json()["user_code"] is None

    def tokens() -> int:
        db.session.expire_all()
        return int(db.session.execute(select(func.count()).select_from(UserToken)).scalar_one())

    missing = member.post(path)  # the body stays optional: older bffs send none
    assert (missing.status_code, missing.get_json()["error"]) == (400, "phrase_required")
    wrong = member.post(path, json={"phrase": _wrong(login["user_code"])})
    assert (wrong.status_code, wrong.get_json()["error"]) == (403, "phrase_mismatch")
    assert member.post(path, json={"phrase": 7}).status_code == 400
    assert tokens() == 0 and not [a for a, t in audit_actions(TENANT) if t == login["id"]]
    stored = store.get(current().redis, login["id"])
    assert stored is not None and stored.status == "pending"
    signed_in = member.post(path, json={"phrase": _as_typed(login["user_code"])})
    assert signed_in.status_code == 200, signed_in.get_json()
    assert tokens() == 1


def test_a_passkey_statement_is_refused_before_the_ceremony_without_the_phrase(
    api_client: FlaskClient, signed_as: Any
) -> None:
    """The statement carries the phrase and the CLI's key: only a typed phrase gets it."""
    owner, member = signed_as("u-owner", TENANT), signed_as("u-mem", TENANT, "member")
    register(member, SoftPasskey.es256("mem-key"))
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    _require_phrase(owner)
    cli = Cli.start(api_client)
    phrase = _phrase(cli)
    path = f"{REQUESTS}/{cli.id}/approval-statement"
    asked = {"bundle_id": bundle_id, "include_keys": ["API_KEY"]}
    missing = member.post(path, json=asked)
    assert (missing.status_code, missing.get_json()["error"]) == (400, "phrase_required")
    wrong = member.post(path, json={**asked, "phrase": _wrong(phrase)})
    assert (wrong.status_code, wrong.get_json()["error"]) == (403, "phrase_mismatch")
    for refused in (missing, wrong):
        assert phrase not in refused.get_data(as_text=True)
        assert cli.public_key not in refused.get_data(as_text=True)
    given = member.post(path, json={**asked, "phrase": _as_typed(phrase)})
    assert given.status_code == 200, given.get_json()
    assert given.get_json()["statement"]["user_code"] == phrase
    assert given.get_json()["rp_id"] == RP_ID


def test_a_service_token_approval_is_not_asked_for_a_phrase(
    api_client: FlaskClient, signed_as: Any
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    _require_phrase(owner)
    body = {"name": "ci", "bundle_id": bundle_id, "keys": ["API_KEY"], "expires_in_days": 30}
    token = owner.post("/api/v1/service-tokens", json=body).get_json()["token"]
    ask = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": TENANT}
    created = api_client.post(
        REQUESTS,
        json={**ask, "bundle": "production/api"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["workload_mode"] == "automatic"
    assert ("request.approved", created.get_json()["id"]) in audit_actions(TENANT)
