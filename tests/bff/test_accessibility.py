"""axe-core on every page of the web UI, light and dark: no serious or critical violations."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bff.browser_support import (
    add_key,
    axe_violations,
    chromium,
    create_bundle,
    describe_violations,
    new_request,
    new_tab,
    sign_up,
    workspace_of,
)
from tests.support.bff import unique_email
from tests.support.stack import LiveStack

__all__ = ["chromium"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


SCHEMES = ("light", "dark")


def _check(page: Any, label: str, found: dict[str, str]) -> None:
    """axe on the page as it is now, in each colour scheme (the page is left dark)."""
    page.wait_for_load_state("load")
    for scheme in SCHEMES:
        page.emulate_media(color_scheme=scheme)
        violations = axe_violations(page)
        if violations:
            found[f"{label}, {scheme}"] = describe_violations(violations)


def _signed_out_pages(page: Any, stack: LiveStack, found: dict[str, str]) -> None:
    for path in ("/", "/sign-in", "/sign-up", "/no-such-page"):
        page.goto(f"{stack.bff_url}{path}")
        _check(page, f"signed out {path}", found)


def _workspace_pages(page: Any, stack: LiveStack, found: dict[str, str]) -> None:
    bundle_id = create_bundle(page, stack, "production/api")
    add_key(page, "API_URL", "https://api.example.test", secret=False)
    add_key(page, "SECRET_TOKEN", "canary-a11y", secret=True)
    _check(page, "bundle", found)
    page.get_by_role("button", name="Reveal").click()
    page.locator("code.revealed").wait_for()
    _check(page, "bundle with a revealed value", found)
    page.get_by_role("link", name="SECRET_TOKEN").click()
    value_card = page.locator(".card", has=page.get_by_role("heading", name="Value"))
    value_card.get_by_role("button", name="Reveal").click()
    page.locator("#key-value-shown").wait_for()
    _check(page, "key with its value revealed", found)
    page.goto(f"{stack.bff_url}/bundles/{bundle_id}")
    page.get_by_role("link", name="API_URL").click()
    _check(page, "key", found)
    signed_in_pages = ("/", "/bundles", "/keys", "/requests", "/workloads", "/members")
    for path in (*signed_in_pages, "/account", "/no-such-page"):
        page.goto(f"{stack.bff_url}{path}")
        _check(page, f"signed in {path}", found)
    page.goto(f"{stack.bff_url}/members")
    page.get_by_label("Email", exact=True).fill("invitee@example.test")
    page.get_by_role("button", name="Create invitation").click()
    page.get_by_test_id("invite-link").wait_for()
    _check(page, "invitation made", found)
    page.goto(f"{stack.bff_url}/invites/accept?token=inv_not-a-real-token")
    _check(page, "join a workspace", found)
    page.get_by_role("button", name="Join the workspace").click()
    page.get_by_text("This invitation link is not valid.").wait_for()
    _check(page, "invitation refused", found)
    page.goto(f"{stack.bff_url}/bundles")
    page.locator("#new-name").fill("production/api")  # taken: the refusal page
    page.get_by_role("button", name="Create bundle").click()
    page.locator("#new-error").wait_for()
    _check(page, "bundle refused", found)

    created = new_request(stack, workspace_of(page, stack), bundle="production/api")
    page.goto(f"{stack.bff_url}/approve/{created['id']}")
    _check(page, "approval", found)
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("The values are on their way to your terminal").wait_for()
    _check(page, "approved", found)
    page.goto(f"{stack.bff_url}/approve/{created['id']}")
    _check(page, "already decided", found)
    page.goto(f"{stack.bff_url}/approve/abcdefghijklmnopqrstuv")
    _check(page, "unknown request", found)
    refused = new_request(stack, workspace_of(page, stack), bundle="production/api")
    page.goto(f"{stack.bff_url}/approve/{refused['id']}")
    page.get_by_role("button", name="Select none").click()
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("Choose at least one key.").wait_for()
    _check(page, "approval refused", found)
    page.get_by_role("button", name="Deny").click()
    page.get_by_text("The request was denied").wait_for()
    _check(page, "denied", found)
    page.goto(f"{stack.bff_url}/audit")
    _check(page, "audit", found)
    page.goto(f"{stack.bff_url}/audit?action=request&bundle={bundle_id}")
    _check(page, "audit filtered", found)
    page.goto(f"{stack.bff_url}/audit?from=2026-03-11&to=2026-03-10")
    _check(page, "audit with a refused filter", found)
    page.goto(f"{stack.bff_url}/audit/report")
    _check(page, "compliance report", found)
    page.goto(f"{stack.bff_url}/audit/report?from=2026-03-11&to=2026-03-10")
    _check(page, "compliance report with a refused period", found)
    page.goto(f"{stack.bff_url}/bundles/{bundle_id}")
    page.locator("#edit-name").evaluate("el => el.removeAttribute('pattern')")
    page.locator("#edit-name").fill("bad name!")
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator("#edit-error").wait_for()
    _check(page, "bundle rename refused", found)


def test_every_page_has_no_serious_accessibility_violations(
    chromium: Any, stack: LiveStack
) -> None:
    """Each page and state is visited once and checked in light and in dark."""
    page = new_tab(chromium, bypass_csp=True)
    found: dict[str, str] = {}
    try:
        _signed_out_pages(page, stack, found)
        sign_up(page, stack, unique_email("a11y"))
        _workspace_pages(page, stack, found)
    finally:
        page.context.close()
    assert not found, "\n".join(f"[{label}]\n{text}" for label, text in found.items())
