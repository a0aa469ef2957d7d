"""People who hold passkeys, a real waiting `envcat get`, and the ways to approve or forge its
delivery: what the passkey security tests share (their fixtures: tests/security/conftest.py)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from envcat.core.approval_statement import ApprovalStatement
from envcat.core.envelope import Envelope, encode_key, seal_envelope
from envcat.core.passkeys import PasskeyProof
from envcat.services.access_requests import store
from envcat.services.runtime import current
from tests.bff.browser_support import PASSWORD, new_tab
from tests.support.bff import unique_email
from tests.support.cli_process import WatchedCli
from tests.support.stack import LiveStack

ENVCAT = Path(sys.executable).parent / "envcat"


WAIT = 45


CANARY = "postgres://passkey-canary-7f3e@db.internal/app"


OTHER_CANARY = "other-canary-91ab"


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


class WaitingCli(WatchedCli):
    """`envcat get` in a subprocess; stderr read as it comes, stdout kept whole."""

    def __init__(self, world: World, *argv: str, cwd: Path | None = None) -> None:
        command = [str(ENVCAT), "get", *argv, "--format", "json", "--no-qr", "--timeout", "90"]
        super().__init__(command, _env(world.home), cwd=cwd or world.project, wait=WAIT)

    def finish(self) -> tuple[int, str, str]:
        assert self.process.stdout is not None
        stdout = self.process.stdout.read().decode("utf-8", "replace")
        return self.exit_code(), stdout, self.stderr()


def trust_ada(world: World) -> None:
    """`envcat approvers add` ada's passkey to the project (once)."""
    if world.ada.credential_id in (world.project / ".envcat.toml").read_text():
        return
    # "--": a base64url credential id may start with "-" (one in 64 does)
    added = envcat(world, "approvers", "add", "--yes", "--", world.ada.credential_id)
    assert added.returncode == 0, added.stderr
    assert world.ada.fingerprint in added.stderr


def posted_with_passkey(
    stack: LiveStack,
    person: Person,
    request_id: str,
    path: str,
    act: Callable[[Any], None],
    *,
    hold: bool = False,
) -> dict[str, Any]:
    """Open the approval page, `act` on it (the passkey signs), and return the form the
    page then POSTed to `path` (`/approve/<id>` or `/approve/<id>/break-glass`).

    With `hold` the post is stopped before the server sees it: the test holds a real
    assertion nobody has used.
    """
    page = person.page
    captured: dict[str, Any] = {}

    def capture(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        captured.update(parse_qs(route.request.post_data or ""))
        if hold:
            route.fulfill(status=204, body="")
        else:
            route.continue_()

    pattern = re.compile(rf"{re.escape(path)}$")
    page.route(pattern, capture)
    try:
        page.goto(f"{stack.settings.public_url}/approve/{request_id}")
        act(page)
        if hold:
            deadline = time.monotonic() + WAIT
            while "passkey_credential" not in captured and time.monotonic() < deadline:
                page.wait_for_timeout(100)
        else:
            page.get_by_text("The values are on their way to your terminal").wait_for()
    finally:
        page.unroute(pattern)
    assert "passkey_credential" in captured, "the page posted no passkey assertion"
    return captured


def approve_in_browser(
    stack: LiveStack, person: Person, request_id: str, *, keep: str = ""
) -> dict[str, Any]:
    """Approve on the page with the passkey; return the form the page posted.

    With `keep`, only that key stays ticked and the post is stopped before the
    server sees it: the test holds a real assertion nobody has used.
    """

    def approve(page: Any) -> None:
        if keep:
            for box in page.locator("input[type=checkbox][name=include_keys]").all():
                box.set_checked(box.get_attribute("value") == keep)
        page.get_by_role("button", name="Approve").click()

    path = f"/approve/{request_id}"
    return posted_with_passkey(stack, person, request_id, path, approve, hold=bool(keep))


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
        request = store.get(redis, request_id)
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
        approval = store.Approval(
            request.tenant_id, world.ada.user_id, world.bundle_id, tuple(keys), time.time()
        )
        assert store.mark_ready(redis, request_id, ciphertext_b64=sealed, approval=approval)


def assert_refused(cli: WaitingCli, reason: str) -> None:
    code, stdout, stderr = cli.finish()
    assert code == 6, stderr
    assert stdout == ""
    assert reason in stderr, stderr
    assert CANARY not in stderr and OTHER_CANARY not in stderr
