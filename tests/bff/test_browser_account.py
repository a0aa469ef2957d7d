"""The account page in headless Chromium: change the password, sign out everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bff.browser_support import chromium, save_screenshot
from tests.support.bff import PASSWORD, unique_email
from tests.support.stack import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["chromium"]  # the fixture, imported for pytest

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def tabs(chromium: Any) -> Iterator[Any]:
    """`tabs()` opens a page in a browser context of its own (its own cookies)."""
    contexts: list[Any] = []

    def open_tab() -> Any:
        context = chromium.new_context(viewport={"width": 1200, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_tab
    for context in contexts:
        context.close()


def _sign_in(page: Any, stack: LiveStack, email: str, password: str) -> None:
    page.goto(f"{stack.bff_url}/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _is_signed_out(page: Any, stack: LiveStack) -> bool:
    page.goto(f"{stack.bff_url}/bundles")
    return bool(re.search(r"/sign-in\?", page.url))


def test_change_password_then_sign_out_everywhere(live_stack: LiveStack, tabs: Any) -> None:
    email = unique_email("ada")
    live_stack.sign_up(email, PASSWORD)
    page, elsewhere = tabs(), tabs()
    for tab in (page, elsewhere):
        _sign_in(tab, live_stack, email, PASSWORD)
        tab.wait_for_url(re.compile(r"/bundles$"))

    page.get_by_role("link", name="Account").click()
    page.wait_for_url(re.compile(r"/account$"))
    assert "signed in in 2 places" in page.get_by_test_id("session-count").inner_text()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.get_by_text("Password changed. 1 other session was signed out.").wait_for()
    save_screenshot(page, "account.png")
    assert _is_signed_out(elsewhere, live_stack)

    _sign_in(elsewhere, live_stack, email, PASSWORD)  # the old password no longer works
    elsewhere.get_by_text("Wrong email or password.").wait_for()
    _sign_in(elsewhere, live_stack, email, NEW_PASSWORD)
    elsewhere.wait_for_url(re.compile(r"/bundles$"))

    page.goto(f"{live_stack.bff_url}/account")
    page.get_by_role("button", name="Sign out everywhere").click()
    page.wait_for_url(re.compile(r"/sign-in$"))
    page.get_by_text("You are signed out everywhere.").wait_for()
    assert _is_signed_out(page, live_stack)
    assert _is_signed_out(elsewhere, live_stack)
