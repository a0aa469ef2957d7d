"""Issue #17 in headless Chromium: who may request, self-approval, a device grant.

One live stack (api, bff, Celery worker) for the module: tests/bff/conftest.py's `stack`.
A signed-in terminal's request is made over HTTP with its user token, as the CLI sends
it; the grant is exercised with real `envcat get` processes, one config directory (so
one device key) per "device".
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.services import user_tokens
from tests.bff.browser_support import chromium, create_bundle, new_tab, save_screenshot, sign_up
from tests.support.cli_process import ENVCAT, assert_waited, clean_env, run_envcat
from tests.support.stack import LiveStack

__all__ = ["chromium"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CANARY = "canary-browser-requesters-8c1e"
APPROVE_URL = re.compile(r"/approve/([A-Za-z0-9_-]{16,128})")


def _owner(chromium: Any, stack: LiveStack, bundle: str) -> tuple[Any, dict[str, Any], str]:
    """A new owner signed in in a tab, with a bundle holding one secret: (tab, me, id)."""
    page = new_tab(chromium)
    sign_up(page, stack, f"owner-{uuid.uuid4().hex[:6]}@example.test")
    bundle_id = create_bundle(page, stack, bundle)
    page.locator("#key-name").fill("API_TOKEN")
    page.locator("#key-value").fill(CANARY)
    page.get_by_role("button", name="Add key").click()
    page.get_by_text("Added API_TOKEN.").wait_for()
    me: dict[str, Any] = page.request.get(f"{stack.bff_url}/api/v1/me").json()
    return page, me, bundle_id


def _screenshot(page: Any, name: str) -> None:
    """A full-page screenshot for the docs, scrolled to the top (the header is sticky)."""
    page.evaluate("window.scrollTo(0, 0)")
    save_screenshot(page, name)


def _ask(stack: LiveStack, workspace: str, token: str | None = None, **hints: Any) -> Any:
    """POST /requests through the bff as the CLI does (signed in when `token` is given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": workspace}
    return httpx.post(
        f"{stack.bff_url}/api/v1/requests", json={**body, **hints}, headers=headers, timeout=30
    )


def test_members_only_and_self_approval_are_refused_in_the_browser(
    chromium: Any, stack: LiveStack, tmp_path: Path
) -> None:
    page, me, bundle_id = _owner(chromium, stack, "production/api")
    try:
        slug, user_id = me["tenant"]["slug"], me["user"]["id"]
        with stack.signed(user_id, me["tenant"]["id"]) as api:
            rule = {"min_role": "member", "no_self_approval": True}
            assert api.put(f"/api/v1/bundles/{bundle_id}/approvers", json=rule).status_code == 200
        # the owner makes the bundle members-only on its page
        page.locator("#requesters-choice").select_option("members")
        page.get_by_role("button", name="Update who may request").click()
        page.get_by_text("Who may request saved.").wait_for()
        assert "Signed-in members only" in page.get_by_test_id("requesters-rule").inner_text()
        _screenshot(page, "bundle-requesters.png")

        # named up front and not signed in: refused before a link exists, by the real CLI too
        early = _ask(stack, slug, bundle="production/api")
        assert (early.status_code, early.json()["error"]) == (403, "members_only")
        assert "envcat login" in early.json()["message"]
        env = clean_env(tmp_path, ENVCAT_SERVER=stack.bff_url, ENVCAT_WORKSPACE=slug)
        cli = run_envcat(["get", "production/api", "--no-qr"], env, tmp_path)
        assert cli.returncode == 4 and cli.stdout == "", cli.stderr  # refused
        assert "released only to members" in cli.stderr and "run envcat login" in cli.stderr
        assert "/approve/" not in cli.stderr
        # unnamed: the approval page explains, and approving is refused
        anonymous = _ask(stack, slug).json()
        page.goto(f"{stack.bff_url}/approve/{anonymous['id']}?bundle_id={bundle_id}")
        note = page.get_by_test_id("members-only").inner_text()
        assert "only releases to signed-in members" in note and "envcat login" in note
        page.get_by_role("button", name="Approve").click()
        page.get_by_role("alert").filter(has_text="signed-in members").wait_for()

        # signed in as the owner: a members-only request, but the owner asked it
        with stack.api_app.app_context():
            token, _ = user_tokens.issue(me["tenant"]["id"], user_id, "laptop")
        mine = _ask(stack, slug, token, bundle="production/api")
        assert mine.status_code == 201, mine.text
        page.goto(f"{stack.bff_url}/approve/{mine.json()['id']}")
        assert me["user"]["email"] in page.get_by_test_id("requester").inner_text()
        page.get_by_role("button", name="Approve").click()
        page.get_by_role("alert").filter(has_text="ask another approver").wait_for()
    finally:
        page.context.close()


def _get(home: Path, stack: LiveStack, slug: str, *args: str) -> subprocess.Popen[str]:
    """A real `envcat get` from the device whose config directory is `home`."""
    env = clean_env(home, ENVCAT_SERVER=stack.bff_url, ENVCAT_WORKSPACE=slug)
    return subprocess.Popen(
        [*ENVCAT, "get", "production/web", "--format", "json", "--no-qr", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=home.parent,
    )


def test_a_grant_ticked_in_the_browser_serves_its_device_until_revoked(
    chromium: Any, stack: LiveStack, tmp_path: Path
) -> None:
    page, me, bundle_id = _owner(chromium, stack, "production/web")
    laptop, desktop = tmp_path / "laptop", tmp_path / "desktop"
    try:
        slug = me["tenant"]["slug"]
        page.locator("#grant-hours").fill("8")
        page.get_by_role("button", name="Save grant limit").click()
        page.get_by_text("Grant limit saved.").wait_for()

        first = _get(laptop, stack, slug)
        assert first.stderr is not None
        seen = ""
        while (match := APPROVE_URL.search(seen)) is None:
            line = first.stderr.readline()
            assert line, seen
            seen += line
        page.goto(f"{stack.bff_url}/approve/{match.group(1)}")
        page.get_by_test_id("grant").get_by_role("checkbox").check()
        page.get_by_label("hours").fill("3")
        _screenshot(page, "approve-grant.png")
        page.get_by_role("button", name="Approve").click()
        page.get_by_text("The values are on their way to your terminal").wait_for()
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0 and json.loads(out) == {"API_TOKEN": CANARY}, seen + err

        # the same device again: nobody is asked; another device waits
        other = _get(desktop, stack, slug, "--timeout", "1")
        again = _get(laptop, stack, slug)
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0 and json.loads(out) == {"API_TOKEN": CANARY}, err
        assert "delivered under grant by" in err and "expires in 3 h" in err
        assert_waited(other)

        # revoked on the bundle page: the laptop's next request waits for a person
        page.goto(f"{stack.bff_url}/bundles/{bundle_id}")
        _screenshot(page, "bundle-grants.png")
        page.get_by_test_id("grant-row").get_by_role("button", name="Revoke").click()
        page.get_by_text("Grant revoked.").wait_for()
        assert "(revoked)" in page.get_by_test_id("grant-row").inner_text()
        assert_waited(_get(laptop, stack, slug, "--timeout", "1"))
    finally:
        page.context.close()
