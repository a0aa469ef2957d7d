"""The first ten minutes in headless Chromium: each friction of issue #15, fixed and kept fixed."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest

from tests.bff.browser_support import (
    add_key,
    chromium,
    create_bundle,
    line_count,
    new_request,
    new_tab,
    save_screenshot,
    sign_up,
    tab,
    workspace_of,
)
from tests.support.bff import unique_email
from tests.support.stack import LiveStack

__all__ = ["chromium", "tab"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def signed_in(tab: Any, stack: LiveStack, name: str) -> None:
    sign_up(tab, stack, unique_email(name))


def test_landing_terminal_is_light_on_dark(tab: Any, stack: LiveStack) -> None:
    tab.goto(stack.bff_url)
    style = tab.evaluate(
        """() => {
            const code = getComputedStyle(document.querySelector('.terminal pre code'));
            const pre = getComputedStyle(document.querySelector('.terminal pre'));
            return [code.backgroundColor, code.color, pre.backgroundColor];
        }"""
    )
    assert style == ["rgba(0, 0, 0, 0)", "rgb(215, 220, 245)", "rgb(15, 18, 32)"]


def test_bundle_name_pattern_works_and_a_refusal_keeps_the_name(tab: Any, stack: LiveStack) -> None:
    signed_in(tab, stack, "pattern")
    name = tab.locator("#new-name")
    verdicts = {}
    for typed in ("production/api", "a.b_c-d", "bad name!", "a//b", "/lead", "trail/"):
        name.fill(typed)
        verdicts[typed] = name.evaluate("el => el.checkValidity()")
    assert verdicts == {
        "production/api": True,
        "a.b_c-d": True,
        "bad name!": False,
        "a//b": False,
        "/lead": False,
        "trail/": False,
    }
    # The rename field on a bundle page checks the same way.
    create_bundle(tab, stack, "taken/name")
    tab.locator("#edit-name").fill("bad name!")
    assert tab.locator("#edit-name").evaluate("el => el.validity.patternMismatch")
    # What the browser let through but the server refuses (a taken name) stays typed.
    tab.goto(f"{stack.bff_url}/bundles")
    tab.locator("#new-name").fill("taken/name")
    tab.locator("#new-description").fill("my description")
    tab.get_by_role("button", name="Create bundle").click()
    tab.locator("#new-error").wait_for()
    assert "already" in tab.locator("#new-error").inner_text()
    assert tab.locator("#new-name").input_value() == "taken/name"
    assert tab.locator("#new-description").input_value() == "my description"


def test_approving_with_no_key_says_choose_one(tab: Any, stack: LiveStack) -> None:
    signed_in(tab, stack, "nokey")
    create_bundle(tab, stack, "prod/nokey")
    add_key(tab, "ONLY", "v", secret=False)
    created = new_request(stack, workspace_of(tab, stack), bundle="prod/nokey")
    tab.goto(f"{stack.bff_url}/approve/{created['id']}")
    assert not tab.get_by_role("button", name="Show keys").is_visible()  # JavaScript switches
    tab.get_by_role("button", name="Select none").click()
    tab.get_by_role("button", name="Approve").click()
    alert = tab.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == "Choose at least one key."


def test_show_keys_button_is_there_without_javascript(chromium: Any, stack: LiveStack) -> None:
    page = new_tab(chromium, java_script_enabled=False)
    try:
        signed_in(page, stack, "nojs")
        create_bundle(page, stack, "prod/nojs")
        created = new_request(stack, workspace_of(page, stack), bundle="prod/nojs")
        page.goto(f"{stack.bff_url}/approve/{created['id']}")
        assert page.get_by_role("button", name="Show keys").is_visible()
    finally:
        page.context.close()


def test_not_found_page_is_ours_and_keeps_the_signed_in_header(tab: Any, stack: LiveStack) -> None:
    signed_in(tab, stack, "lost")
    reply = tab.goto(f"{stack.bff_url}/no/such/page")
    assert reply is not None and reply.status == 404
    assert tab.locator(".account").is_visible()
    assert tab.get_by_role("link", name="Audit").is_visible()
    body = tab.locator("main").inner_text()
    assert "There is nothing at this address" in body
    assert "requested URL" not in body


def test_bundle_page_layout(tab: Any, stack: LiveStack) -> None:
    signed_in(tab, stack, "layout")
    create_bundle(tab, stack, "layout/app")
    add_key(tab, "SERVICE_URL", "https://localhost:8443/api", secret=False)
    add_key(tab, "SERVICE_TOKEN", "t0ken", secret=True)
    # The command to type, with the workspace the CLI must name.
    workspace = workspace_of(tab, stack)
    assert workspace
    assert tab.locator("#get-command").inner_text() == f"envcat get layout/app -w {workspace}"
    header = tab.get_by_role("columnheader", name="Actions")
    assert header.is_visible()
    detach = tab.get_by_role("button", name="Detach").first
    header_box, detach_box = header.bounding_box(), detach.bounding_box()
    # The actions sit under their header, right-aligned like it.
    assert (
        abs((header_box["x"] + header_box["width"]) - (detach_box["x"] + detach_box["width"])) < 16
    )
    # Each row's cells share one vertical middle.
    middles = tab.evaluate(
        """() => [...document.querySelectorAll('.table tbody tr')].map(row =>
            [...row.children].map(td => { const r = td.getBoundingClientRect();
                                          return Math.round(r.top + r.height / 2); }))"""
    )
    assert all(len(set(row)) == 1 for row in middles), middles
    # The import form has a card of its own, not squeezed under "Attach from the library".
    import_card = tab.locator(
        "section.card", has=tab.get_by_role("heading", name="Import a .env file")
    )
    assert import_card.count() == 1
    assert import_card.get_by_role("heading", name="Attach from the library").count() == 0
    # A URL is never split inside a word at this width.
    assert line_count(tab, ".table td.value code") == 1


BROKEN_WORDS = """els => els.flatMap(el => {
    const broken = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (const m of node.textContent.matchAll(/[A-Za-z0-9_]+/g)) {
            const range = document.createRange();
            range.setStart(node, m.index);
            range.setEnd(node, m.index + m[0].length);
            const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
            if (tops.size > 1) { broken.push(m[0]); }
        }
    }
    return broken;
})"""


def test_names_and_urls_do_not_break_mid_word(chromium: Any, stack: LiveStack) -> None:
    page = new_tab(chromium)
    command = "envcat get staging/api --server http://localhost:8888 --format json --no-qr"
    try:
        signed_in(page, stack, "narrow")
        create_bundle(page, stack, "staging/api")
        add_key(
            page, "SERVICE_URL", "https://staging.internal.example:8443/v1/health", secret=False
        )
        created = new_request(
            stack,
            workspace_of(page, stack),
            bundle="staging/api",
            context={"hostname": "localhost", "cwd": "/srv/staging", "command": command},
        )
        for width in (560, 700, 900, 1200):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(f"{stack.bff_url}/approve/{created['id']}")
            # The examples; a URL wider than its box may still wrap (that page's
            # template has no <wbr>s), but never these words.
            broken = page.locator("dd code").evaluate_all(BROKEN_WORDS)
            assert not {"localhost", "staging", "srv"} & set(broken), (width, broken)
            page.goto(f"{stack.bff_url}/bundles")
            assert page.locator("td code").evaluate_all(BROKEN_WORDS) == [], width
            page.get_by_role("link", name="staging/api").click()
            assert page.locator("td code").evaluate_all(BROKEN_WORDS) == [], width
            page.goto(f"{stack.bff_url}/audit")
            assert page.locator("td code").evaluate_all(BROKEN_WORDS) == [], width
    finally:
        page.context.close()


def test_reveal_ends_on_a_get_and_a_refresh_does_not_reveal_again(
    tab: Any, stack: LiveStack
) -> None:
    signed_in(tab, stack, "reveal")
    bundle_id = create_bundle(tab, stack, "reveal/app")
    add_key(tab, "HIDDEN", "canary-reveal-81f2", secret=True)
    tab.get_by_role("button", name="Reveal").click()
    tab.locator("code.revealed").wait_for()
    assert tab.locator("code.revealed").inner_text() == "canary-reveal-81f2"
    assert re.search(rf"/bundles/{bundle_id}\?reveal=", tab.url)
    tab.reload()
    assert tab.locator("code.revealed").count() == 0
    assert "canary-reveal-81f2" not in tab.content()
    tab.get_by_text("shown once already").wait_for()
    tab.goto(f"{stack.bff_url}/audit?action=key.revealed")
    assert tab.locator("tbody tr").count() == 1  # one reveal, one audit event

    # The key page does the same.
    tab.goto(f"{stack.bff_url}/bundles/{bundle_id}")
    tab.get_by_role("link", name="HIDDEN").click()
    tab.locator(".card", has=tab.get_by_role("heading", name="Value")).get_by_role(
        "button", name="Reveal"
    ).click()
    tab.locator("#key-value-shown").wait_for()
    tab.reload()
    assert tab.locator("#key-value-shown").count() == 0


def test_import_lets_the_form_choose_secret_or_plain(tab: Any, stack: LiveStack) -> None:
    signed_in(tab, stack, "import")
    create_bundle(tab, stack, "import/app")
    tab.locator("#import-content").fill("PLAIN_ONE=visible-value\n")
    tab.get_by_label("Mark new keys secret").uncheck()
    tab.get_by_role("button", name="Preview import").click()
    tab.get_by_role("button", name="Confirm import").click()
    tab.get_by_text("Imported: 1 created").wait_for()
    assert tab.locator("td.value code", has_text="visible-value").count() == 1
    tab.locator("#import-content").fill("SECRET_ONE=hidden-value\n")
    assert tab.get_by_label("Mark new keys secret").is_checked()  # the default
    tab.get_by_role("button", name="Preview import").click()
    tab.get_by_role("button", name="Confirm import").click()
    tab.get_by_text("Imported: 1 created").wait_for()
    assert "hidden-value" not in tab.content()


def test_deleting_a_key_from_a_bundle_page_returns_there(tab: Any, stack: LiveStack) -> None:
    signed_in(tab, stack, "delete")
    bundle_id = create_bundle(tab, stack, "delete/app")
    add_key(tab, "DOOMED", "x", secret=False)
    tab.get_by_role("link", name="DOOMED").click()
    tab.get_by_role("link", name="Back to the bundle").wait_for()
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.get_by_role("button", name="Delete key").click()
    tab.wait_for_url(f"{stack.bff_url}/bundles/{bundle_id}")
    tab.get_by_text("Key deleted").wait_for()


def test_audit_page_filters_and_downloads(tab: Any, stack: LiveStack) -> None:
    signed_in(tab, stack, "auditor")
    bundle_id = create_bundle(tab, stack, "audit/app")
    add_key(tab, "RELEASED", "r", secret=False)
    add_key(tab, "KEPT", "k", secret=True)
    created = new_request(stack, workspace_of(tab, stack), bundle="audit/app")
    tab.goto(f"{stack.bff_url}/approve/{created['id']}")
    tab.get_by_label("KEPT").uncheck()
    tab.get_by_role("button", name="Approve").click()
    tab.get_by_text("The values are on their way").wait_for()

    tab.goto(f"{stack.bff_url}/audit")
    row = tab.locator("tbody tr", has_text="request.approved")
    assert "auditor-" in row.inner_text()  # the email, not the user id
    assert row.locator("code", has_text="RELEASED").count() == 1
    assert row.locator("code", has_text="KEPT").count() == 0
    assert (
        row.get_by_role("link", name="audit/app").get_attribute("href") == f"/bundles/{bundle_id}"
    )
    save_screenshot(tab, "audit.png")

    tab.get_by_label("Action").fill("request")
    tab.get_by_role("button", name="Filter").click()
    tab.wait_for_url(re.compile(r"action=request"))
    assert tab.locator("tbody tr").count() == 1
    with tab.expect_download() as download:
        tab.get_by_role("link", name="Download CSV").click()
    text = download.value.path().read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["action"] for r in rows] == ["request.approved"]
    assert rows[0]["keys"] == "RELEASED"

    tab.get_by_role("link", name="Compliance report").click()
    tab.wait_for_url(f"{stack.bff_url}/audit/report")
    bundles = tab.locator("section", has=tab.get_by_role("heading", name="Per bundle"))
    assert "RELEASED (1)" not in bundles.inner_text()  # approved, but never collected
    assert "pending" in tab.locator("section", has_text="Releases").inner_text()
    tab.get_by_text("Intact: all").wait_for()
    save_screenshot(tab, "report.png")


def test_a_decided_link_says_what_happened(tab: Any, stack: LiveStack) -> None:
    signed_in(tab, stack, "decided")
    create_bundle(tab, stack, "decided/app")
    add_key(tab, "ONE", "1", secret=False)
    workspace = workspace_of(tab, stack)
    approved = new_request(stack, workspace, bundle="decided/app")
    tab.goto(f"{stack.bff_url}/approve/{approved['id']}")
    tab.get_by_role("button", name="Approve").click()
    tab.get_by_text("The values are on their way").wait_for()
    tab.goto(f"{stack.bff_url}/approve/{approved['id']}")
    assert tab.get_by_role("heading", level=1).inner_text() == "This request was already approved"

    denied = new_request(stack, workspace, bundle="decided/app")
    tab.goto(f"{stack.bff_url}/approve/{denied['id']}")
    tab.get_by_role("button", name="Deny").click()
    tab.get_by_text("The request was denied").wait_for()
    tab.goto(f"{stack.bff_url}/approve/{denied['id']}")
    assert tab.get_by_role("heading", level=1).inner_text() == "This request was denied"
