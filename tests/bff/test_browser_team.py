"""Issue #17 in headless Chromium: a team workspace, two invitations by email, two approvers.

The owner creates a team workspace, a bundle that needs two approvals, and invites
bob and carol; each follows the link from the email the loopback SMTP server got,
joins, and approves; the first approval says "1 of 2", the second releases the
value, which the CLI's key opens.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.bff.browser_support import chromium, new_tab, save_screenshot, sign_up
from tests.support.bff import module_stack
from tests.support.envelopes import open_delivery
from tests.support.inboxes import SmtpInbox
from tests.support.stack import LiveStack

__all__ = ["chromium"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CANARY = "canary-browser-team-5d21"
_LINK = re.compile(r"https?://\S+")


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str,
    redis_dbs: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
    inbox: SmtpInbox,
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url, redis_dbs, tmp_path_factory, smtp_host="127.0.0.1", smtp_port=inbox.port
    ) as shared:
        yield shared


def _invite(page: Any, email: str) -> None:
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_role("button", name="Create invitation").click()
    page.get_by_test_id("invite-link").wait_for()


def _join(chromium: Any, stack: LiveStack, inbox: SmtpInbox, email: str) -> Any:
    """A new person signs up, follows the emailed link and joins; returns their tab."""
    mail = inbox.wait_for(lambda m: m["To"] == email)
    link = next(u for u in _LINK.findall(mail.get_content()) if "/invites/accept" in u)
    tab = new_tab(chromium)
    sign_up(tab, stack, email)
    tab.goto(link)
    tab.get_by_role("button", name="Join the workspace").click()
    tab.wait_for_url(re.compile(r"/bundles$"))
    assert "You joined Platform as member." in tab.content()
    return tab


def test_invite_accept_and_two_approvers_release_a_value(
    chromium: Any, stack: LiveStack, inbox: SmtpInbox
) -> None:
    suffix = uuid.uuid4().hex[:6]
    owner = new_tab(chromium)
    tabs = [owner]
    try:
        sign_up(owner, stack, f"owner-{suffix}@example.test")
        owner.goto(f"{stack.bff_url}/members")
        owner.get_by_label("Name", exact=True).fill("Platform")
        owner.locator("#workspace-slug").fill(f"platform-{suffix}")
        owner.get_by_role("button", name="Create workspace").click()
        owner.get_by_text("you are its owner").wait_for()
        for name in ("bob", "carol"):
            _invite(owner, f"{name}-{suffix}@example.test")
        save_screenshot(owner, "members.png")
        bob = _join(chromium, stack, inbox, f"bob-{suffix}@example.test")
        carol = _join(chromium, stack, inbox, f"carol-{suffix}@example.test")
        tabs += [bob, carol]

        owner.goto(f"{stack.bff_url}/bundles")
        owner.locator("#new-name").fill("production/api")
        owner.get_by_role("button", name="Create bundle").click()
        owner.wait_for_url(re.compile(r"/bundles/[0-9a-f-]{36}$"))
        owner.locator("#key-name").fill("API_TOKEN")
        owner.locator("#key-value").fill(CANARY)
        owner.get_by_role("button", name="Add key").click()
        owner.get_by_text("Added API_TOKEN.").wait_for()
        owner.get_by_label("Approvals needed (different people, same keys)").fill("2")
        owner.get_by_role("button", name="Update approvers").click()
        owner.get_by_text("2 different approvers").wait_for()

        key = generate_keypair()
        body = {
            "client_pubkey": encode_public_key(key),
            "workspace": f"platform-{suffix}",
            "bundle": "production/api",
        }
        created = httpx.post(f"{stack.bff_url}/api/v1/requests", json=body).json()
        url = created["verification_uri_complete"]

        bob.goto(url)
        assert "2 approvals" in bob.get_by_test_id("approvers").inner_text()
        bob.get_by_role("button", name="Approve").click()
        assert bob.get_by_test_id("approvals-count").inner_text() == "1 of 2 approvals"
        carol.goto(url)
        carol.get_by_role("button", name="Approve").click()
        carol.get_by_text("The values are on their way to your terminal").wait_for()

        waited = httpx.get(
            f"{stack.bff_url}/api/v1/requests/{created['id']}/wait?timeout=20",
            headers={"X-Poll-Token": created["poll_token"]},
            timeout=30,
        ).json()
        assert waited["status"] == "ready"
        assert open_delivery(key, waited["ciphertext_base64"]) == {"API_TOKEN": CANARY}
        assert all(CANARY.encode() not in raw for raw in inbox.raw)
    finally:
        for tab in tabs:
            tab.context.close()
