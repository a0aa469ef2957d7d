"""Issue #20 with real processes: passkey-signed approvals that the real `envcat get` checks.

Chromium's virtual authenticator (CTAP2, internal transport, resident keys, user
verification) registers a passkey on the account page and signs approvals on the
approval page, against the live stack (api, Celery worker, bff) served as
`http://localhost:<port>`: WebAuthn takes no IP address as relying party id.
The CLI is the real `envcat` subprocess in a project whose `.envcat.toml` lists
the approver. Then each attack of the issue is replayed, and the CLI must refuse
it with exit 6 and nothing on stdout:

- the server's own approve path, called without an assertion (a signed call
  straight to the api, as a compromised bff could make);
- the assertion of another request, delivered as a compromised worker would;
- a real assertion over fewer keys than the (worker's) delivery carries;
- a valid passkey of a member who is not listed;
- an assertion made for another origin (a software key the project lists, so
  the origin is the only thing wrong; the same key with the right origin passes).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from envcat.core.approval_statement import ApprovalStatement
from envcat.services.access_requests import store
from envcat.services.runtime import current
from tests.support.passkey_world import (
    CANARY,
    OTHER_CANARY,
    World,
    approve_in_browser,
    assert_refused,
    deliver_as_worker,
    envcat,
    proof_from,
    register_passkey,
    sign_in,
    trust_ada,
)
from tests.support.passkeys import SoftPasskey
from tests.support.signed import add_member
from tests.support.stack import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_passkey_from_the_account_page_approves_and_the_real_cli_verifies_it(
    stack: LiveStack, world: World, waiting: Any
) -> None:
    listed = envcat(world, "approvers", "list")
    assert listed.returncode == 0, listed.stderr
    assert world.ada.credential_id in listed.stdout and world.ada.fingerprint in listed.stdout
    assert world.ada.email not in listed.stdout  # the public list names passkeys, not people
    trust_ada(world)
    assert "*" in envcat(world, "approvers", "list").stdout  # now marked as trusted

    cli = waiting()
    form = approve_in_browser(stack, world.ada, cli.request_id())
    assert json.loads(form["passkey_statement"][0])["keys"] == ["DATABASE_URL", "OTHER"]
    code, stdout, stderr = cli.finish()
    assert code == 0, stderr
    assert json.loads(stdout) == {"DATABASE_URL": CANARY, "OTHER": OTHER_CANARY}
    assert "passkey approval verified" in stderr
    with stack.signed(world.ada.user_id, world.ada.tenant_id) as api:
        actions = [e["action"] for e in api.get("/api/v1/audit").json()["events"]]
        last_used = api.get("/api/v1/passkeys").json()["passkeys"][0]["last_used_at"]
    assert "passkey.registered" in actions and "request.approved" in actions
    assert last_used is not None


def test_the_server_forced_to_approve_without_an_assertion_is_refused(
    stack: LiveStack, world: World, waiting: Any
) -> None:
    trust_ada(world)
    cli = waiting()
    request_id = cli.request_id()
    # the api's approve path, signed as ada (what a compromised bff can do)
    with stack.signed(world.ada.user_id, world.ada.tenant_id) as api:
        body = {"bundle_id": world.bundle_id, "include_keys": ["DATABASE_URL", "OTHER"]}
        reply = api.post(f"/api/v1/requests/{request_id}/encrypt-from-bundle", json=body)
    assert reply.status_code == 202, reply.text  # the server obeys: the terminal must not
    assert_refused(cli, "carries no passkey signature")


def test_an_assertion_for_another_request_is_refused(
    stack: LiveStack, world: World, waiting: Any
) -> None:
    trust_ada(world)
    first = waiting()
    used = approve_in_browser(stack, world.ada, first.request_id())
    assert first.finish()[0] == 0
    second = waiting()
    request_id = second.request_id()
    keys = {"DATABASE_URL": CANARY, "OTHER": OTHER_CANARY}
    deliver_as_worker(stack, world, request_id, keys, proof_from(used, world.ada.email))
    assert_refused(second, "challenge mismatch")


def test_a_statement_with_an_extra_key_is_refused(
    stack: LiveStack, world: World, waiting: Any
) -> None:
    trust_ada(world)
    cli = waiting()
    request_id = cli.request_id()
    # ada's passkey really signs this request, for DATABASE_URL alone (the server never sees it)
    form = approve_in_browser(stack, world.ada, request_id, keep="DATABASE_URL")
    proof = proof_from(form, world.ada.email)
    assert proof["statement"]["keys"] == ["DATABASE_URL"]
    keys = {"DATABASE_URL": CANARY, "OTHER": OTHER_CANARY}  # one key more than approved
    deliver_as_worker(stack, world, request_id, keys, proof)
    assert_refused(cli, "challenge mismatch")


def test_a_valid_passkey_of_an_unlisted_approver_is_refused(
    stack: LiveStack, world: World, chromium: Any, waiting: Any
) -> None:
    trust_ada(world)
    bob = sign_in(stack, chromium, "bob")
    with stack.api_app.app_context():
        add_member(bob.user_id, world.ada.tenant_id, "member")
    register_passkey(stack, bob, "bob's key")
    cli = waiting()
    request_id = cli.request_id()
    page = bob.page
    page.goto(f"{stack.settings.public_url}/approve/{request_id}")
    page.get_by_role("button", name=re.compile("Switch to")).click()
    page.get_by_text("Verification phrase").wait_for()
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("The values are on their way to your terminal").wait_for()
    assert_refused(cli, "does not list")
    page.context.close()


@pytest.mark.parametrize(
    ("origin", "code"), [("https://evil.example", 6), ("{public}", 0)], ids=["other", "own"]
)
def test_an_assertion_made_for_another_origin_is_refused(
    stack: LiveStack, world: World, waiting: Any, tmp_path: Path, origin: str, code: int
) -> None:
    soft = SoftPasskey.es256("soft-approver")
    entry = soft.approver("soft")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".envcat.toml").write_text(
        (world.project / ".envcat.toml").read_text().split("[[approvers]]")[0]
        + "[[approvers]]\n"
        + "".join(f"{name} = {json.dumps(value)}\n" for name, value in entry.items())
    )
    cli = waiting(cwd=project)
    request_id = cli.request_id()
    public = stack.settings.public_url
    with stack.api_app.app_context():
        request = store.get(current().redis, request_id)
        assert request is not None
        user_code = request.user_code
    keys = {"DATABASE_URL": CANARY}
    statement = ApprovalStatement.of(
        request_id=request_id,
        cli_public_key=request.cli_pub,
        workspace=world.ada.workspace,
        bundle_id=world.bundle_id,
        keys=keys,
        user_code=user_code,
        decided_at=int(time.time()),
    )
    proof = soft.sign(statement, origin=origin.format(public=public), rp_id="localhost")
    deliver_as_worker(stack, world, request_id, keys, proof.as_dict())
    if code == 0:
        status, stdout, stderr = cli.finish()
        assert status == 0, stderr
        assert json.loads(stdout) == keys
    else:
        assert_refused(cli, "origin")


def test_passkeys_are_renamed_and_removed_on_the_account_page(
    stack: LiveStack, chromium: Any
) -> None:
    from tests.bff.browser_support import (
        axe_violations,
        describe_violations,
        new_request,
        save_screenshot,
    )

    carol = sign_in(stack, chromium, "carol", bypass_csp=True)  # for axe-core only
    register_passkey(stack, carol, "carol's key")
    page = carol.page
    assert not (found := axe_violations(page)), describe_violations(found)
    page.goto(f"{stack.settings.public_url}/account")  # from the top, not the #passkeys anchor
    save_screenshot(page, "account-passkeys.png")
    created = new_request(stack, carol.workspace)
    with stack.signed(carol.user_id, carol.tenant_id) as api:
        bundle = api.post("/api/v1/bundles", json={"name": "solo"}).json()
        api.post(f"/api/v1/bundles/{bundle['id']}/keys", json={"name": "SOLO", "value": "x"})
    page.goto(f"{stack.settings.public_url}/approve/{created['id']}")
    page.get_by_text("Approving asks for your passkey").wait_for()
    assert not (found := axe_violations(page)), describe_violations(found)
    save_screenshot(page, "approve-passkey.png")

    page.goto(f"{stack.settings.public_url}/account")
    page.get_by_label("New name for carol's key").fill("carol's YubiKey")
    page.get_by_role("button", name="Rename").click()
    page.get_by_text("Passkey renamed.").wait_for()
    assert page.get_by_test_id("passkey-name").all_inner_texts() == ["carol's YubiKey"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove carol's YubiKey").click()
    page.get_by_text("Passkey removed.").wait_for()
    assert page.get_by_test_id("no-passkeys").is_visible()
    with stack.signed(carol.user_id, carol.tenant_id) as api:
        actions = [e["action"] for e in api.get("/api/v1/audit").json()["events"]]
    assert {"passkey.registered", "passkey.removed"} <= set(actions)
    page.context.close()


def test_a_workspace_that_requires_passkeys_refuses_an_approval_without_one(
    stack: LiveStack,
) -> None:
    from tests.support.bff import csrf_in, new_user

    owner, member = new_user(stack, "owner"), new_user(stack, "member")
    with stack.api_app.app_context():
        add_member(member.user_id, owner.tenant_id, "member")
    switched = member.post("/workspaces/switch", {"tenant_id": owner.tenant_id, "next": "/account"})
    assert switched.status_code == 303
    member.csrf = csrf_in(member.get("/account").text)  # switching renews the session
    # the member may not change the setting; the owner may
    refused = member.post("/account/workspace-policy", {"require_passkey": "on"})
    assert refused.status_code == 302, refused.text[:3000]
    assert "Your role does not allow this" in member.get("/account").text
    assert owner.post("/account/workspace-policy", {"require_passkey": "on"}).status_code == 302
    assert "now need a passkey" in owner.get("/account").text
    with stack.signed(owner.user_id, owner.tenant_id) as api:
        bundle = api.post("/api/v1/bundles", json={"name": "locked"}).json()
        api.post(f"/api/v1/bundles/{bundle['id']}/keys", json={"name": "LOCKED", "value": CANARY})
    body = {"client_pubkey": "A" * 43 + "=", "workspace": owner.workspace}
    request_id = stack.browser().post("/api/v1/requests", json=body).json()["id"]
    page = member.get(f"/approve/{request_id}")
    assert "requires a passkey to approve" in page.text
    approved = member.post(
        f"/approve/{request_id}", {"bundle_id": bundle["id"], "include_keys": "LOCKED"}
    )
    assert approved.status_code == 403
    assert "This workspace requires a passkey to approve" in approved.text
    assert CANARY not in approved.text
    context = stack.browser().get(f"/api/v1/requests/{request_id}/context").json()
    assert context["status"] == "pending"
