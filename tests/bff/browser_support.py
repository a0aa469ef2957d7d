"""Headless Chromium for the UI tests: the browser, tabs, axe-core, and a few page helpers.

Test modules import the fixtures they use (`from tests.bff.browser_support import
chromium, tab`). axe-core is the pinned copy `scripts/bootstrap.sh` fetches with
npm into .cache/js/ (scripts/js-deps.txt); it is injected into each page by
Playwright (the context bypasses the bff's CSP for that one script).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.stack import LiveStack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
DOC_IMAGES = REPO / "docs" / "images"
PASSWORD = "correct horse battery staple"
# axe-core impact levels this project refuses on any page.
BLOCKING_IMPACTS = ("serious", "critical")
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def axe_script() -> Path:
    """The pinned axe.min.js; fail (not skip) when bootstrap has not fetched it."""
    for line in (REPO / "scripts" / "js-deps.txt").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "axe-core":
            path = REPO / ".cache" / "js" / f"axe-core-{fields[1]}" / fields[2]
            assert path.is_file(), f"{path} is missing: run WITH_TEST_DEPS=1 ./scripts/bootstrap.sh"
            return path
    raise AssertionError("scripts/js-deps.txt names no axe-core version")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (./scripts/test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield instance
        instance.close()


def new_tab(chromium: Any, **options: Any) -> Any:
    """A tab in a fresh context (own cookies); the caller closes `tab.context`."""
    context = chromium.new_context(viewport={"width": 1200, "height": 900}, **options)
    context.set_default_timeout(15_000)
    return context.new_page()


@pytest.fixture
def tab(chromium: Any) -> Iterator[Any]:
    page = new_tab(chromium)
    yield page
    page.context.close()


def save_screenshot(page: Any, name: str) -> None:
    """Keep a screenshot in artifacts/; copy it to docs/images/ with ENVCAT_UPDATE_DOC_IMAGES=1."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / name
    page.screenshot(path=str(target), full_page=True)
    if os.environ.get("ENVCAT_UPDATE_DOC_IMAGES") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, DOC_IMAGES / name)


def sign_up(page: Any, stack: LiveStack, email: str) -> None:
    """A new local account (through the api), signed in through the sign-in form."""
    stack.sign_up(email, PASSWORD)
    page.goto(f"{stack.bff_url}/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/bundles$"))
    page.locator(".account").wait_for()


def create_bundle(page: Any, stack: LiveStack, name: str) -> str:
    """Create a bundle through the form; return its id."""
    page.goto(f"{stack.bff_url}/bundles")
    page.locator("#new-name").fill(name)
    page.get_by_role("button", name="Create bundle").click()
    page.wait_for_url(re.compile(r"/bundles/[0-9a-f-]{36}$"))
    return str(page.url.rsplit("/", 1)[1])


def add_key(page: Any, name: str, value: str, *, secret: bool) -> None:
    """Add a key on the open bundle page."""
    page.locator("#key-name").fill(name)
    page.locator("#key-value").fill(value)
    page.locator("form[action$='/keys'] input[name=is_secret]").set_checked(secret)
    page.get_by_role("button", name="Add key").click()
    page.get_by_text(f"Added {name}.").wait_for()


def new_request(stack: LiveStack, workspace: str, **hints: Any) -> dict[str, Any]:
    """Create an access request as a CLI would (public route of the bff)."""
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": workspace}
    reply = stack.browser().post("/api/v1/requests", json={**body, **hints})
    assert reply.status_code == 201, reply.text
    data: dict[str, Any] = reply.json()
    return data


def workspace_of(page: Any, stack: LiveStack) -> str:
    """The signed-in person's workspace slug, as the CLI would name it."""
    me: dict[str, Any] = page.request.get(f"{stack.bff_url}/api/v1/me").json()
    return str(me["tenant"].get("slug") or "")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Run axe-core on the page; return the serious and critical violations."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_script()))
    # resultTypes: every violating node in full, passes and the rest summarised (axe's
    # own advice for speed: building selectors for every passing node is most of a run).
    result: dict[str, Any] = page.evaluate(
        """tags => axe.run(document, {
            runOnly: {type: 'tag', values: tags}, resultTypes: ['violations'],
        })""",
        AXE_TAGS,
    )
    return [v for v in result["violations"] if v.get("impact") in BLOCKING_IMPACTS]


def describe_violations(violations: list[dict[str, Any]]) -> str:
    """One line per violation and node, for an assertion message."""
    lines = []
    for violation in violations:
        for node in violation["nodes"][:5]:
            lines.append(f"{violation['id']} ({violation['impact']}): {node['target']}")
    return "\n".join(lines)


def line_count(page: Any, selector: str) -> int:
    """How many lines the first element matching `selector` wraps onto."""
    count: int = page.evaluate(
        """sel => {
            const el = document.querySelector(sel);
            const range = document.createRange();
            range.selectNodeContents(el);
            const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
            return tops.size;
        }""",
        selector,
    )
    return count
