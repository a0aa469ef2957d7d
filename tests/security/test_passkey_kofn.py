"""Issue #20, k-of-n: the real `envcat get` needs k passkeys of k different listed people.

The live stack, Chromium's virtual authenticator and the `envcat get` subprocess
are those of tests/security/test_passkey_approvals.py (its fixtures and helpers,
not a second harness). Ada approves in the browser with her registered passkey;
Bob and Carol approve through the api's own approve path with software passkeys
registered through the api (tests/support/passkeys.py), so one browser serves.

- a 2-of-n bundle approved by two listed people: delivered, both checked;
- a server (worker, signing key) that delivers one assertion, one assertion
  twice, or one person's two passkeys, for a 2-of-n bundle: refused;
- `.envcat.toml` asking `min_approvals = 2` while the server's rule says 1: refused;
- an unlisted member's real, server-verified assertion counted toward k: refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from envcat.core.approval_statement import ApprovalStatement
from envcat.services.access_requests import store
from envcat.services.runtime import current
from tests.bff.browser_support import PASSWORD
from tests.support.bff import unique_email
from tests.support.passkey_world import (
    CANARY,
    OTHER_CANARY,
    World,
    approve_in_browser,
    assert_refused,
    deliver_as_worker,
)
from tests.support.passkeys import SoftPasskey
from tests.support.signed import add_member
from tests.support.stack import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KEYS = {"DATABASE_URL": CANARY, "OTHER": OTHER_CANARY}


@dataclass
class SoftMember:
    """A member who approves through the api with a software passkey registered there."""

    user_id: str
    key: SoftPasskey


@dataclass
class Team:
    world: World
    ada: dict[str, str]  # her `.envcat.toml` entry (her passkey from the browser)
    bob: SoftMember
    bob_spare: SoftPasskey  # bob's second passkey
    carol: SoftMember  # a member whose passkey no .envcat.toml lists
    team_bundle: str  # "team/app": approvals_required = 2
    public_url: str


def _member(stack: LiveStack, world: World, name: str, *keys: SoftPasskey) -> SoftMember:
    account = stack.sign_up(unique_email(name), PASSWORD)
    user_id = account["user"]["id"]
    with stack.api_app.app_context():
        add_member(user_id, world.ada.tenant_id, "member")
    public = stack.settings.public_url
    with stack.signed(user_id, world.ada.tenant_id) as api:
        for number, key in enumerate(keys):
            options = api.post("/api/v1/passkey-challenges").json()["options"]
            credential = key.registration(options["challenge"], origin=public, rp_id="localhost")
            body = {"name": f"{name} {number}", "credential": credential}
            made = api.post("/api/v1/passkeys", json=body)
            assert made.status_code == 201, made.text
    return SoftMember(user_id, keys[0])


@pytest.fixture(scope="module")
def team(stack: LiveStack, world: World) -> Team:
    bob_key, bob_spare = SoftPasskey.es256("bob-key"), SoftPasskey.ed25519("bob-spare")
    bob = _member(stack, world, "bob", bob_key, bob_spare)
    carol = _member(stack, world, "carol", SoftPasskey.es256("carol-key"))
    ada = world.ada
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        bundle = api.post("/api/v1/bundles", json={"name": "team/app"}).json()
        for key in api.get("/api/v1/keys").json()["keys"]:  # demo/app's, attached here too
            added = api.post(f"/api/v1/bundles/{bundle['id']}/keys", json={"key_id": key["id"]})
            assert added.status_code == 201, added.text
        rule = {"min_role": "member", "user_ids": [], "approvals_required": 2}
        assert api.put(f"/api/v1/bundles/{bundle['id']}/approvers", json=rule).status_code == 200
        listed = api.get(f"/api/v1/workspaces/{ada.workspace}/approvers").json()["approvers"]
    mine = next(item for item in listed if item["credential_id"] == ada.credential_id)
    entry = {"name": "ada's laptop", "credential_id": mine["credential_id"]}
    entry["public_key"] = mine["public_key"]
    return Team(world, entry, bob, bob_spare, carol, bundle["id"], stack.settings.public_url)


def start_in_project(
    waiting: Any, team: Team, where: Path, bundle: str, *entries: dict[str, str], **more: int
) -> Any:
    """`envcat get` in a project whose `.envcat.toml` lists ada, `entries` and `more`."""
    ada = team.world.ada
    lines = [
        f'server = "{team.public_url}"',
        f'workspace = "{ada.workspace}"',
        f'bundle = "{bundle}"',
        *(f"{name} = {value}" for name, value in more.items()),
    ]
    for entry in (team.ada, *entries):
        lines.append("[[approvers]]")
        lines.extend(f"{name} = {json.dumps(value)}" for name, value in entry.items())
    where.mkdir()
    (where / ".envcat.toml").write_text("\n".join(lines) + "\n")
    return waiting(cwd=where)


def statement_for(
    stack: LiveStack, request_id: str, bundle_id: str, keys: dict[str, str]
) -> ApprovalStatement:
    """The statement an approver of `keys` from `bundle_id` signs for this request."""
    with stack.api_app.app_context():
        request = store.get(current().redis, request_id)
    assert request is not None
    return ApprovalStatement.of(
        request_id=request_id,
        cli_public_key=request.cli_pub,
        workspace=request.workspace,
        bundle_id=bundle_id,
        keys=keys,
        user_code=request.user_code,
        decided_at=int(time.time()),
    )


def approve_with_soft_key(
    stack: LiveStack, team: Team, member: SoftMember, request_id: str, bundle_id: str
) -> dict[str, Any]:
    """The api's approve path, signed as `member`, with their software passkey's assertion."""
    signed = statement_for(stack, request_id, bundle_id, KEYS)
    assertion = member.key.assertion(signed, origin=stack.settings.public_url, rp_id="localhost")
    body = {"bundle_id": bundle_id, "include_keys": list(KEYS), "passkey": assertion}
    with stack.signed(member.user_id, team.world.ada.tenant_id) as api:
        reply = api.post(f"/api/v1/requests/{request_id}/encrypt-from-bundle", json=body)
    assert reply.status_code == 202, reply.text
    return dict(reply.json())


def soft_proof(
    stack: LiveStack, key: SoftPasskey, request_id: str, bundle_id: str, delay: int = 0
) -> dict[str, Any]:
    """A valid assertion by `key` over this request's statement, as a worker could carry it."""
    signed = statement_for(stack, request_id, bundle_id, KEYS)
    if delay:
        signed = ApprovalStatement.of(
            **{**signed.as_dict(), "decided_at": signed.decided_at + delay}
        )
    return key.sign(signed, origin=stack.settings.public_url, rp_id="localhost").as_dict()


def test_a_2_of_n_bundle_approved_by_two_listed_people_is_delivered_and_both_are_checked(
    stack: LiveStack, team: Team, waiting: Any, tmp_path: Path
) -> None:
    bob = team.bob.key.approver("bob's key")
    cli = start_in_project(waiting, team, tmp_path / "p", "team/app", bob, min_approvals=2)
    request_id = cli.request_id()
    first = approve_with_soft_key(stack, team, team.bob, request_id, team.team_bundle)
    assert first["status"] == "awaiting_approvals" and first["approvals"] == 1
    # the vote wakes the terminal's long poll, which shows the count at once
    while "1 of 2 approvals" not in (line := cli.lines.get(timeout=10)):
        cli.seen.append(line)
    approve_in_browser(stack, team.world.ada, request_id)  # the k-th approval releases
    code, stdout, stderr = cli.finish()
    assert code == 0, stderr
    assert json.loads(stdout) == KEYS
    assert "2 passkey approvals verified" in stderr


@pytest.mark.parametrize("forged", ["one", "the same twice", "one person's two passkeys"])
def test_a_server_that_delivers_fewer_than_k_people_is_refused(
    stack: LiveStack, team: Team, waiting: Any, tmp_path: Path, forged: str
) -> None:
    world = team.world
    bob = team.bob.key.approver("bob's key")
    spare = team.bob_spare.approver("bob's spare")
    bob["person"] = spare["person"] = "bob"
    cli = start_in_project(waiting, team, tmp_path / "p", "demo/app", bob, spare)
    request_id = cli.request_id()
    proof = soft_proof(stack, team.bob.key, request_id, world.bundle_id)
    proofs = {
        "one": [proof],
        "the same twice": [proof, proof],
        "one person's two passkeys": [
            proof,
            soft_proof(stack, team.bob_spare, request_id, world.bundle_id, delay=1),
        ],
    }[forged]
    # signed with the server's own key, stating the bundle's rule asks for 2
    many = {"passkeys": proofs} if len(proofs) > 1 else {}
    deliver_as_worker(stack, world, request_id, KEYS, proofs[-1], approvals_required=2, **many)
    assert_refused(cli, "by 2 different approvers listed in .envcat.toml and carries 1")


def test_min_approvals_in_envcat_toml_outranks_the_servers_rule_of_one(
    stack: LiveStack, team: Team, waiting: Any, tmp_path: Path
) -> None:
    bob = team.bob.key.approver("bob's key")
    cli = start_in_project(waiting, team, tmp_path / "p", "demo/app", bob, min_approvals=2)
    # the server's own path: demo/app's rule asks for one approval, ada's real passkey gives it
    approve_in_browser(stack, team.world.ada, cli.request_id())
    assert_refused(cli, "by 2 different approvers listed in .envcat.toml and carries 1")


def test_an_unlisted_members_assertion_does_not_count_toward_k(
    stack: LiveStack, team: Team, waiting: Any, tmp_path: Path
) -> None:
    bob = team.bob.key.approver("bob's key")  # listed, but carol approves
    cli = start_in_project(waiting, team, tmp_path / "p", "team/app", bob)
    request_id = cli.request_id()
    # the server verifies carol's passkey and counts her: she may approve under its rule
    approve_with_soft_key(stack, team, team.carol, request_id, team.team_bundle)
    approve_in_browser(stack, team.world.ada, request_id)
    assert_refused(cli, "passkeys .envcat.toml does not list")
