"""The whole approval flow in headless Chromium against the live stack and the real CLI."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.bff.browser_support import PASSWORD, chromium, new_tab, save_screenshot
from tests.support.stack import LiveStack

__all__ = ["chromium"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ENVCAT = Path(sys.executable).with_name("envcat")
CANARY = "canary-secret-7f3a9c"
PLAIN_VALUE = "https://api.example.test"
CLI_WAIT_SECONDS = 30


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    tab = new_tab(chromium)
    yield tab
    tab.context.close()


class CliRun:
    """The real `envcat get` in a subprocess; stderr is read line by line as it comes."""

    def __init__(self, server: str, bundle: str, workspace: str, config_home: Path) -> None:
        argv = [str(ENVCAT), "get", bundle, "-w", workspace, "--server", server, "--no-qr"]
        self.process = subprocess.Popen(
            [*argv, "--format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # its own known_servers: the first use pins this run's server key
            env={**os.environ, "XDG_CONFIG_HOME": str(config_home)},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def approval(self) -> tuple[str, str]:
        """Wait for the approval URL and the verification phrase on stderr."""
        url = phrase = None
        while url is None or phrase is None:
            line = self.lines.get(timeout=CLI_WAIT_SECONDS)
            self.seen.append(line)
            if match := re.search(r"(https?://\S+/approve/\S+)", line):
                url = match.group(1)
            if match := re.search(r"Verification phrase:\s+(\S+)", line):
                phrase = match.group(1)
        return url, phrase

    def finish(self) -> tuple[int, str, str]:
        """Exit code, stdout and the whole stderr."""
        assert self.process.stdout is not None
        stdout = self.process.stdout.read()
        code = self.process.wait(timeout=CLI_WAIT_SECONDS)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, stdout, "".join(self.seen)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def cli_runs() -> Iterator[list[CliRun]]:
    runs: list[CliRun] = []
    yield runs
    for run in runs:
        run.kill()


def sign_up_in_browser(page: Any, stack: LiveStack, email: str) -> None:
    page.goto(f"{stack.bff_url}/sign-up")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/sign-in"))  # sign-up never signs in (no email oracle)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/bundles$"))


def create_bundle_with_two_keys(page: Any, stack: LiveStack, name: str) -> None:
    page.goto(f"{stack.bff_url}/bundles")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Description").fill("The API's production settings")
    page.get_by_role("button", name="Create bundle").click()
    page.wait_for_url(re.compile(r"/bundles/[0-9a-f-]{36}$"))
    for key, value, secret in (("API_URL", PLAIN_VALUE, False), ("SECRET_TOKEN", CANARY, True)):
        page.locator("#key-name").fill(key)
        page.locator("#key-value").fill(value)
        box = page.locator("form[action$='/keys'] input[name=is_secret]")
        box.set_checked(secret)
        page.get_by_role("button", name="Add key").click()
        page.get_by_text(f"Added {key}.").wait_for()


def start_cli(
    stack: LiveStack, runs: list[CliRun], bundle: str, workspace: str = "ada"
) -> tuple[CliRun, str, str]:
    """`envcat get BUNDLE -w WORKSPACE` (ada@example.test's personal workspace is `ada`)."""
    run = CliRun(stack.bff_url, bundle, workspace, Path(tempfile.mkdtemp(prefix="envcat-cfg-")))
    runs.append(run)
    url, phrase = run.approval()
    return run, url, phrase


def test_approve_one_key_reaches_the_cli(
    live_stack: LiveStack, page: Any, cli_runs: list[CliRun]
) -> None:
    sign_up_in_browser(page, live_stack, "ada@example.test")
    create_bundle_with_two_keys(page, live_stack, "production/api")
    assert page.locator(".masked").count() == 1  # the secret is masked, the plain value shown
    assert CANARY not in page.content()
    save_screenshot(page, "bundle.png")

    run, url, phrase = start_cli(live_stack, cli_runs, "production/api")
    assert url.startswith(f"{live_stack.bff_url}/approve/")
    page.goto(url)
    assert page.get_by_test_id("phrase").inner_text() == phrase
    page.get_by_text("Check that this matches your terminal").wait_for()
    assert page.locator("#bundle-picker option:checked").inner_text().startswith("production/api")
    assert page.get_by_label("API_URL").is_checked()
    assert page.get_by_label("SECRET_TOKEN").is_checked()  # no template keys: all preselected
    save_screenshot(page, "approve.png")

    page.get_by_label("SECRET_TOKEN").uncheck()
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("The values are on their way to your terminal").wait_for()

    code, stdout, stderr = run.finish()
    assert code == 0, stderr
    assert json.loads(stdout) == {"API_URL": PLAIN_VALUE}
    assert CANARY not in stdout + stderr

    # The link, opened again, says it was used (from the workspace's audit log).
    page.goto(url)
    assert page.get_by_role("heading", level=1).inner_text() == "This link was already used"


def sign_in_in_browser(page: Any, stack: LiveStack, email: str) -> None:
    page.goto(f"{stack.bff_url}/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/bundles$"))


def test_deny_makes_the_cli_exit_4(
    live_stack: LiveStack, page: Any, cli_runs: list[CliRun]
) -> None:
    account = live_stack.sign_up("grace@example.test", PASSWORD)
    with live_stack.signed(account["user"]["id"], account["tenant"]["id"]) as api:
        bundle = api.post("/api/v1/bundles", json={"name": "staging/api"}).json()
        api.post(f"/api/v1/bundles/{bundle['id']}/keys", json={"name": "TOKEN", "value": CANARY})
    sign_in_in_browser(page, live_stack, "grace@example.test")
    run, url, phrase = start_cli(live_stack, cli_runs, "staging/api", "grace")
    page.goto(url)
    assert page.get_by_test_id("phrase").inner_text() == phrase
    page.get_by_role("button", name="Deny").click()
    page.get_by_text("The request was denied").wait_for()

    code, stdout, stderr = run.finish()
    assert code == 4, stderr
    assert stdout == ""
    assert "denied" in stderr
    assert CANARY not in stderr


def test_signed_out_visit_goes_through_sign_in_and_back(live_stack: LiveStack, page: Any) -> None:
    account = live_stack.sign_up("linus@example.test", PASSWORD)
    created = httpx.post(
        f"{live_stack.bff_url}/api/v1/requests",
        json={
            "client_pubkey": encode_public_key(generate_keypair()),
            "workspace": account["tenant"]["slug"],
            "bundle": "nowhere",
        },
    ).json()
    approval_path = f"/approve/{created['id']}"

    page.goto(f"{live_stack.bff_url}{approval_path}")
    page.wait_for_url(re.compile(r"/sign-in\?redirect_url="))
    assert parse_qs(urlsplit(page.url).query) == {"redirect_url": [approval_path]}
    page.get_by_label("Email").fill("linus@example.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    page.wait_for_url(f"{live_stack.bff_url}{approval_path}")
    assert page.get_by_test_id("phrase").inner_text() == created["user_code"]
    page.get_by_text("which is not a bundle here").wait_for()
