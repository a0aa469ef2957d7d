"""Issues #17 and #20 with real processes: the passkey signs a break-glass release's reason.

The live stack, Chromium's virtual authenticator and the real `envcat get`
subprocess are those of tests/security/test_passkey_approvals.py (the fixtures of
tests/security/conftest.py). Here demo/app's rule names bob alone, so ada, the
owner, can only release by breaking glass; the project lists ada's passkey.

- ada breaks glass on the approval page: her passkey signs the release with the
  reason typed in the form (a blank one never starts the ceremony), and the CLI
  checks the assertion and prints the reason;
- a server holding the delivery signing key (a compromised worker) re-signs the
  envelope with another reason, presents ada's ordinary approval as break-glass,
  or strips the marker from her break-glass release: the CLI refuses each (exit 6,
  nothing on stdout, no value on stderr).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support.passkey_world import (
    CANARY,
    OTHER_CANARY,
    Person,
    World,
    approve_in_browser,
    assert_refused,
    deliver_as_worker,
    posted_with_passkey,
    proof_from,
    trust_ada,
)
from tests.support.signed import add_member
from tests.support.stack import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KEYS = {"DATABASE_URL": CANARY, "OTHER": OTHER_CANARY}
REASON = "INC-5150 payments down, bob unreachable"
ALTERED = "routine rotation, nothing to see"


@pytest.fixture(scope="module")
def held(stack: LiveStack, world: World) -> World:
    """The world with demo/app's rule naming bob alone, and ada's passkey trusted."""
    ada = world.ada
    bob = f"u-bob-{ada.user_id}"
    with stack.api_app.app_context():
        add_member(bob, ada.tenant_id, "member")
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        rule = {"min_role": None, "user_ids": [bob], "approvals_required": 1}
        saved = api.put(f"/api/v1/bundles/{world.bundle_id}/approvers", json=rule)
        assert saved.status_code == 200, saved.text
    trust_ada(world)
    return world


def break_glass_in_browser(
    stack: LiveStack, person: Person, request_id: str, reason: str, *, hold: bool = False
) -> dict[str, Any]:
    """Break glass on the approval page with the passkey; return the form the page posted.

    With `hold` the post is stopped before the server sees it: the test holds a real
    assertion over a break-glass statement that nobody has used.
    """

    def break_glass(page: Any) -> None:
        form = page.locator("#break-glass-form")
        form.get_by_label(re.compile("^Reason")).fill(reason)
        form.get_by_role("button", name="Break glass and release").click()

    path = f"/approve/{request_id}/break-glass"
    return posted_with_passkey(stack, person, request_id, path, break_glass, hold=hold)


def test_a_break_glass_release_signed_with_a_passkey_reaches_the_cli_with_its_reason(
    stack: LiveStack, held: World, waiting: Any
) -> None:
    ada = held.ada
    cli = waiting()
    request_id = cli.request_id()
    page = ada.page
    page.goto(f"{stack.settings.public_url}/approve/{request_id}")
    form = page.locator("#break-glass-form")
    # a blank reason passes the field's `required`, but the script starts no ceremony
    form.get_by_label(re.compile("^Reason")).fill("   ")
    form.get_by_role("button", name="Break glass and release").click()
    form.get_by_text("Write the reason first").wait_for()
    posted = break_glass_in_browser(stack, ada, request_id, REASON)
    assert json.loads(posted["passkey_statement"][0])["break_glass"] == REASON
    code, stdout, stderr = cli.finish()
    assert code == 0, stderr
    assert json.loads(stdout) == KEYS
    assert "passkey approval verified" in stderr
    assert f"delivered by break-glass: {ada.email} — {REASON}" in stderr
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        events = api.get("/api/v1/audit", params={"action": "request.break_glass"}).json()
    assert any(e["target"] == request_id for e in events["events"])


@pytest.mark.parametrize(
    ("forged", "refusal"),
    [
        ("another_reason", "the delivery's break-glass reason is not the one the passkey signed"),
        ("another_reason_restated", "does not match this delivery (challenge mismatch)"),
        ("ordinary_as_break_glass", "approved an ordinary release, and the delivery says"),
        ("break_glass_stripped", "signed a break-glass release, and the delivery does not say so"),
    ],
)
def test_a_server_that_changes_the_signed_break_glass_is_refused(
    stack: LiveStack, held: World, waiting: Any, forged: str, refusal: str
) -> None:
    ada = held.ada
    cli = waiting()
    request_id = cli.request_id()
    if forged == "ordinary_as_break_glass":  # ada's real, unused, ordinary approval
        form = approve_in_browser(stack, ada, request_id, keep="DATABASE_URL")
    else:  # ada's real, unused, break-glass release with REASON
        form = break_glass_in_browser(stack, ada, request_id, REASON, hold=True)
    proof = proof_from(form, ada.email)
    keys = {name: KEYS[name] for name in proof["statement"]["keys"]}
    marker = None if forged == "break_glass_stripped" else {"reason": ALTERED}
    if forged == "ordinary_as_break_glass":
        marker = {"reason": REASON}
    if forged == "another_reason_restated":  # the statement the envelope repeats, rewritten too
        proof["statement"] = {**proof["statement"], "break_glass": ALTERED}
    # signed with the server's own key, as a compromised worker (or DELIVERY_SIGNING_KEY) can
    deliver_as_worker(stack, held, request_id, keys, proof, break_glass=marker)
    assert_refused(cli, refusal)  # exit 6, nothing on stdout, no value on stderr
    stderr = cli.stderr()
    assert "refusing the delivery" in stderr and "signed statement does not match" in stderr
    assert "delivered by break-glass" not in stderr and ALTERED not in stderr
