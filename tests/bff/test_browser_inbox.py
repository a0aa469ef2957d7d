"""Issue #15 in Chromium: the approver inbox updates itself, bulk attach, and an import preview
that writes nothing until confirmed; axe-core on each new page, screenshots for the docs."""

from __future__ import annotations

import re
from collections.abc import Iterator
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
    save_screenshot,
    sign_up,
    workspace_of,
)
from tests.support.bff import new_user, unique_email
from tests.support.stack import LiveStack

__all__ = ["chromium"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def tab(chromium: Any) -> Iterator[Any]:
    """A tab that lets Playwright inject axe-core (the bff's CSP allows no inline script)."""
    page = new_tab(chromium, bypass_csp=True)
    yield page
    page.context.close()


def _no_violations(page: Any) -> None:
    violations = axe_violations(page)
    assert not violations, describe_violations(violations)


def test_a_request_made_after_the_page_loaded_appears_without_reload(
    tab: Any, stack: LiveStack
) -> None:
    sign_up(tab, stack, unique_email("inbox"))
    workspace = workspace_of(tab, stack)
    tab.goto(f"{stack.bff_url}/requests")
    tab.get_by_text("Nothing is waiting").wait_for()
    tab.evaluate("window.loadedOnce = true")  # gone if the page reloads
    context = {"hostname": "ci-runner-7", "cwd": "/srv/app", "command": "envcat get prod/api"}
    created = new_request(stack, workspace, bundle="prod/api", context=context)
    row = tab.locator(f"tr[data-request='{created['id']}']")
    row.wait_for(timeout=10_000)
    assert tab.evaluate("window.loadedOnce") is True
    assert created["user_code"] in row.inner_text()
    assert "ci-runner-7" in row.inner_text() and "envcat get prod/api" in row.inner_text()
    assert row.get_by_role("link", name="Open").get_attribute("href") == f"/approve/{created['id']}"
    _no_violations(tab)
    save_screenshot(tab, "requests.png")
    # a member of another workspace sees nothing of it, page or poll
    mallory = new_user(stack, "mallory")
    assert created["id"] not in mallory.get("/requests").text
    assert mallory.get("/requests.json").json() == {"requests": []}
    signed_out = stack.browser().get("/requests.json")  # a link holder without a session
    assert signed_out.status_code in (302, 401) and created["id"] not in signed_out.text


def test_bulk_attach_and_an_import_preview_that_writes_nothing_until_confirmed(
    tab: Any, stack: LiveStack
) -> None:
    sign_up(tab, stack, unique_email("lists"))
    for name in ("ALPHA", "BETA", "GAMMA"):
        tab.goto(f"{stack.bff_url}/keys")
        tab.locator("#key-name").fill(name)
        tab.locator("#key-value").fill(f"{name.lower()}-value")
        tab.get_by_role("button", name="Create key").click()
        tab.get_by_text(f"Created {name}.").wait_for()
    bundle_id = create_bundle(tab, stack, "prod/api")
    attach = tab.locator("#bulk-attach")
    attach.get_by_label("ALPHA").check()
    attach.get_by_label("GAMMA").check()
    _no_violations(tab)
    attach.get_by_role("button", name="Attach selected").click()
    tab.get_by_text("2 keys attached.").wait_for()
    keys_table = tab.locator("section.card", has=tab.get_by_role("heading", name="Keys"))
    assert keys_table.get_by_role("link", name="ALPHA").is_visible()
    assert keys_table.get_by_role("link", name="GAMMA").is_visible()
    save_screenshot(tab, "bundle-bulk.png")

    add_key(tab, "KEPT", "stored-value", secret=True)
    tab.locator("#import-content").fill(
        "ALPHA=alpha-value\nKEPT=pasted-other\nNEW_PLAIN=https://example.test\nNEW_SECRET=s3\n"
    )
    tab.get_by_role("button", name="Preview import").click()
    tab.wait_for_url(re.compile(r"/import/preview$"))
    status = {
        name: tab.locator(f"tr[data-key='{name}']").get_attribute("data-status")
        for name in ("ALPHA", "KEPT", "NEW_PLAIN", "NEW_SECRET")
    }
    assert status == {
        "ALPHA": "unchanged",
        "KEPT": "changed",
        "NEW_PLAIN": "new",
        "NEW_SECRET": "new",
    }
    assert "stored-value" not in tab.content()  # the stored value never reaches the page
    _no_violations(tab)
    save_screenshot(tab, "import-preview.png")
    # nothing written yet: the bundle still has three keys
    before = tab.request.get(f"{stack.bff_url}/api/v1/bundles/{bundle_id}").json()
    assert sorted(k["name"] for k in before["keys"]) == ["ALPHA", "GAMMA", "KEPT"]
    tab.locator("tr[data-key='NEW_PLAIN'] input[name=secret]").uncheck()
    tab.get_by_role("button", name="Confirm import").click()
    tab.get_by_text(re.compile(r"Imported: 2 created")).wait_for()
    after = tab.request.get(f"{stack.bff_url}/api/v1/bundles/{bundle_id}").json()
    kinds = {k["name"]: k["is_secret"] for k in after["keys"]}
    assert kinds["NEW_PLAIN"] is False and kinds["NEW_SECRET"] is True
    assert kinds["KEPT"] is True  # changed but not overwritten: kept as stored


def test_the_key_list_pages_by_fifty_and_searches(stack: LiveStack) -> None:
    person = new_user(stack, "paging")
    for n in range(52):
        reply = person.post("/keys", {"name": f"K_{n:02d}", "value": "v", "is_secret": "on"})
        assert reply.status_code in (302, 303)
    first = person.get("/keys").text
    assert first.count('href="/keys/') == 50 and "52 keys." in first
    next_link = re.search(r'href="\?(cursor=[^"]+)" rel="next"', first)
    assert next_link is not None
    second = person.get(f"/keys?{next_link.group(1)}").text
    assert "K_50" in second and "K_51" in second and "K_00" not in second
    assert 'rel="next"' not in second and "First page" in second
    found = person.get("/keys?q=k_4").text
    assert "10 keys match" in found and found.count('href="/keys/') == 10
