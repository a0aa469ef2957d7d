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

import base64
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from envcat.core.approval_statement import ApprovalStatement
from envcat.core.envelope import Envelope, encode_key, seal_envelope
from envcat.core.passkeys import PasskeyProof
from envcat.services import access_requests
from envcat.services.runtime import current
from tests.bff.browser_support import PASSWORD, chromium, new_tab
from tests.support.bff import module_stack, unique_email
from tests.support.passkeys import SoftPasskey
from tests.support.signed import add_member
from tests.support.stack import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["chromium"]

ENVCAT = Path(sys.executable).parent / "envcat"
APPROVAL_URL = re.compile(r"/approve/([A-Za-z0-9_-]+)")
WAIT = 45
CANARY = "postgres://passkey-canary-7f3e@db.internal/app"
OTHER_CANARY = "other-canary-91ab"


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url, redis_dbs, tmp_path_factory, public_host="localhost"
    ) as shared:
        yield shared


def with_authenticator(page: Any) -> None:
    """Give the tab Chromium's virtual authenticator (it verifies the user by itself)."""
    session = page.context.new_cdp_session(page)
    session.send("WebAuthn.enable")
    session.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )


@dataclass
class Person:
    """A signed-in browser tab with its own authenticator, and who it is."""

    page: Any
    user_id: str
    tenant_id: str
    email: str
    workspace: str
    credential_id: str = ""
    fingerprint: str = ""


def sign_in(stack: LiveStack, chromium: Any, name: str, **options: Any) -> Person:
    email = unique_email(name)
    account = stack.sign_up(email, PASSWORD)
    page = new_tab(chromium, **options)
    with_authenticator(page)
    public = stack.settings.public_url
    page.goto(f"{public}/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/bundles$"))
    tenant = account["tenant"]
    return Person(page, account["user"]["id"], tenant["id"], email, tenant["slug"])


def register_passkey(stack: LiveStack, person: Person, name: str) -> None:
    """Add a passkey on the account page, as a person would."""
    page = person.page
    page.goto(f"{stack.settings.public_url}/account")
    page.get_by_label("Name of the new passkey").fill(name)
    page.get_by_role("button", name="Add a passkey").click()
    page.get_by_test_id("passkey-name").filter(has_text=name).wait_for()
    person.fingerprint = page.get_by_test_id("passkey-fingerprint").first.inner_text()
    with stack.signed(person.user_id, person.tenant_id) as api:
        listed = api.get("/api/v1/passkeys").json()["passkeys"]
    person.credential_id = next(k["credential_id"] for k in listed if k["name"] == name)


@dataclass
class World:
    ada: Person
    bundle_id: str
    project: Path
    home: Path


@pytest.fixture(scope="module")
def world(stack: LiveStack, chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> World:
    ada = sign_in(stack, chromium, "ada")
    register_passkey(stack, ada, "ada's laptop")
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        bundle = api.post("/api/v1/bundles", json={"name": "demo/app"}).json()
        for name, value in (("DATABASE_URL", CANARY), ("OTHER", OTHER_CANARY)):
            added = api.post(
                f"/api/v1/bundles/{bundle['id']}/keys", json={"name": name, "value": value}
            )
            assert added.status_code == 201, added.text
    project = tmp_path_factory.mktemp("project")
    (project / ".envcat.toml").write_text(
        f'server = "{stack.settings.public_url}"\nworkspace = "{ada.workspace}"\n'
        'bundle = "demo/app"\nallow_vars = []\n'
    )
    return World(ada, bundle["id"], project, tmp_path_factory.mktemp("home"))


def envcat(world: World, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENVCAT), *argv],
        cwd=cwd or world.project,
        env=_env(world.home),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def _env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CONFIG_HOME": str(home)}


class WaitingCli:
    """`envcat get` in a subprocess; stderr read as it comes, stdout kept whole."""

    def __init__(self, world: World, *argv: str, cwd: Path | None = None) -> None:
        command = [str(ENVCAT), "get", *argv, "--format", "json", "--no-qr", "--timeout", "90"]
        self.process = subprocess.Popen(
            command,
            cwd=cwd or world.project,
            env=_env(world.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.put(raw.decode("utf-8", "replace"))

    def request_id(self) -> str:
        while True:
            line = self.lines.get(timeout=WAIT)
            self.seen.append(line)
            if found := APPROVAL_URL.search(line):
                return found.group(1)

    def finish(self) -> tuple[int, str, str]:
        assert self.process.stdout is not None
        stdout = self.process.stdout.read().decode("utf-8", "replace")
        code = self.process.wait(timeout=WAIT)
        time.sleep(0.1)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, stdout, "".join(self.seen)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def waiting(world: World) -> Iterator[Any]:
    started: list[WaitingCli] = []

    def start(*argv: str, cwd: Path | None = None) -> WaitingCli:
        cli = WaitingCli(world, *argv, cwd=cwd)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        cli.stop()


def trust_ada(world: World) -> None:
    """`envcat approvers add` ada's passkey to the project (once)."""
    if world.ada.credential_id in (world.project / ".envcat.toml").read_text():
        return
    # "--": a base64url credential id may start with "-" (one in 64 does)
    added = envcat(world, "approvers", "add", "--yes", "--", world.ada.credential_id)
    assert added.returncode == 0, added.stderr
    assert world.ada.fingerprint in added.stderr


def approve_in_browser(
    stack: LiveStack, person: Person, request_id: str, *, keep: str = ""
) -> dict[str, Any]:
    """Approve on the page with the passkey; return the form the page posted.

    With `keep`, only that key stays ticked and the post is stopped before the
    server sees it: the test holds a real assertion nobody has used.
    """
    page = person.page
    captured: dict[str, Any] = {}

    def capture(route: Any) -> None:
        captured.update(parse_qs(route.request.post_data or ""))
        if keep:
            route.fulfill(status=204, body="")
        else:
            route.continue_()

    pattern = re.compile(rf"/approve/{re.escape(request_id)}$")
    page.route(
        pattern,
        lambda route: capture(route) if route.request.method == "POST" else route.continue_(),
    )
    try:
        page.goto(f"{stack.settings.public_url}/approve/{request_id}")
        if keep:
            for box in page.locator("input[type=checkbox][name=include_keys]").all():
                box.set_checked(box.get_attribute("value") == keep)
        page.get_by_role("button", name="Approve").click()
        if keep:
            deadline = time.monotonic() + WAIT
            while "passkey_credential" not in captured and time.monotonic() < deadline:
                page.wait_for_timeout(100)
        else:
            page.get_by_text("The values are on their way to your terminal").wait_for()
    finally:
        page.unroute(pattern)
    assert "passkey_credential" in captured, "the page posted no passkey assertion"
    return captured


def proof_from(form: dict[str, Any], email: str) -> dict[str, Any]:
    """The proof a worker would put into the envelope, from the page's posted form."""
    statement = ApprovalStatement.from_dict(json.loads(form["passkey_statement"][0]))
    credential = json.loads(form["passkey_credential"][0])
    response = credential["response"]
    return PasskeyProof(
        statement=statement,
        credential_id=credential["id"],
        authenticator_data=response["authenticatorData"],
        client_data_json=response["clientDataJSON"],
        signature=response["signature"],
        approver_email=email,
    ).as_dict()


def deliver_as_worker(
    stack: LiveStack,
    world: World,
    request_id: str,
    keys: dict[str, str],
    passkey: dict[str, Any] | None,
    **stated: Any,
) -> None:
    """What a compromised worker (or a holder of DELIVERY_SIGNING_KEY) can do: sign, seal, store.

    `stated` are further envelope fields (e.g. `passkeys`, `approvals_required`, `bundle_id`).
    """
    with stack.api_app.app_context():
        redis = current().redis
        request = access_requests.get(redis, request_id)
        assert request is not None
        keyring = stack.settings.signing_keyring()
        envelope = Envelope(
            request_id=request_id,
            cli_public_key=request.cli_pub,
            workspace_id=request.tenant_id,
            workspace_slug=request.workspace,
            bundle_id=stated.pop("bundle_id", world.bundle_id),
            bundle_name=stated.pop("bundle_name", "demo/app"),
            approver_id=world.ada.user_id,
            approver_email=world.ada.email,
            approved_at=time.time(),
            keys=keys,
            server_keys=[encode_key(key) for key in keyring.public_keys],
            passkey=passkey,
            **stated,
        )
        sealed = base64.b64encode(seal_envelope(envelope, keyring)).decode()
        approval = access_requests.Approval(
            request.tenant_id, world.ada.user_id, world.bundle_id, tuple(keys), time.time()
        )
        assert access_requests.mark_ready(
            redis, request_id, ciphertext_b64=sealed, approval=approval
        )


def assert_refused(cli: WaitingCli, reason: str) -> None:
    code, stdout, stderr = cli.finish()
    assert code == 6, stderr
    assert stdout == ""
    assert reason in stderr, stderr
    assert CANARY not in stderr and OTHER_CANARY not in stderr


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
        request = access_requests.get(current().redis, request_id)
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
