"""The phished-link attack replayed in headless Chromium against "approvers type the phrase".

An owner turns on "Require approvers to type the verification phrase" on the account
page. Someone runs the real `envcat get` and sends the link to a member of the
workspace who has nothing but the link (the careless approver RFC 8628 §5.4 warns
about). That member opens the approval page: the phrase appears nowhere in it, nor in
the inbox or any JSON the bff serves for the request; a guessed phrase is refused on the
page and the real CLI keeps waiting. Typed as the terminal printed it, the approval
goes through and the real CLI receives the value.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.bff.browser_support import (
    axe_violations,
    chromium,
    create_bundle,
    describe_violations,
    new_tab,
    save_screenshot,
    sign_up,
)
from tests.support.bff import add_key, new_user, open_request
from tests.support.bff import create_bundle as create_bundle_over_http
from tests.support.cli_process import ENVCAT, WatchedCli, clean_env
from tests.support.signed import add_member
from tests.support.stack import LiveStack

__all__ = ["chromium"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CANARY = "canary-typed-phrase-5d2a"
PHRASE_LINE = re.compile(r"Verification phrase:\s+([A-Z]{4}-[A-Z]{4})")
LABEL = "Type the verification phrase your terminal shows"


def _person(chromium: Any, stack: LiveStack, name: str) -> tuple[Any, dict[str, Any]]:
    page = new_tab(chromium, bypass_csp=True)  # so axe-core can be injected
    sign_up(page, stack, f"{name}-{uuid.uuid4().hex[:6]}@example.test")
    me: dict[str, Any] = page.request.get(f"{stack.bff_url}/api/v1/me").json()
    return page, me


def _printed_phrase(cli: WatchedCli) -> str:
    """The phrase the real CLI printed under its link."""
    while not (found := PHRASE_LINE.search(cli.stderr())):
        cli.seen.append(cli.lines.get(timeout=cli.wait))
    return found.group(1)


def _assert_nowhere(page: Any, stack: LiveStack, request_id: str, phrase: str) -> None:
    """Neither the page nor any JSON the bff serves the browser for it holds the phrase."""
    forms = (phrase, phrase.replace("-", ""))
    content = page.content()
    assert not any(form in content for form in forms)
    for path in (
        f"/api/v1/requests/{request_id}/context",
        "/api/v1/inbox",
        "/requests",
        "/requests.json",
    ):
        reply = page.request.get(f"{stack.bff_url}{path}")
        assert reply.status == 200, (path, reply.status)
        assert not any(form in reply.text() for form in forms), path


def test_a_link_holder_cannot_approve_without_the_terminals_phrase(
    chromium: Any, stack: LiveStack, tmp_path: Path
) -> None:
    owner, me = _person(chromium, stack, "owner")
    holder, theirs = _person(chromium, stack, "holder")
    cli = None
    try:
        bundle_id = create_bundle(owner, stack, "production/api")
        owner.locator("#key-name").fill("API_TOKEN")
        owner.locator("#key-value").fill(CANARY)
        owner.get_by_role("button", name="Add key").click()
        owner.get_by_text("Added API_TOKEN.").wait_for()
        owner.goto(f"{stack.bff_url}/account")
        owner.get_by_label("Require approvers to type the verification phrase").check()
        owner.get_by_role("button", name="Save workspace settings").click()
        owner.get_by_text("Approvers now type the verification phrase.").wait_for()
        with stack.api_app.app_context():
            add_member(theirs["user"]["id"], me["tenant"]["id"], "member")

        slug = me["tenant"]["slug"]
        env = clean_env(tmp_path, ENVCAT_SERVER=stack.bff_url, ENVCAT_WORKSPACE=slug)
        argv = [*ENVCAT, "get", "production/api", "--format", "json", "--no-qr"]
        cli = WatchedCli([*argv, "--timeout", "90"], env, cwd=tmp_path, wait=45)
        request_id = cli.request_id()
        phrase = _printed_phrase(cli)

        # the link holder opens the link and acts in the workspace it names
        holder.goto(f"{stack.bff_url}/approve/{request_id}")
        holder.get_by_role("button", name=re.compile("^Switch to")).click()
        holder.get_by_role("heading", name="A terminal is asking for secrets").wait_for()
        if bundle_id not in holder.url:
            holder.goto(f"{stack.bff_url}/approve/{request_id}?bundle_id={bundle_id}")
        field = holder.get_by_label(LABEL)
        assert field.get_attribute("autocomplete") == "off"
        assert field.get_attribute("required") is not None
        _assert_nowhere(holder, stack, request_id, phrase)
        violations = axe_violations(holder)
        assert not violations, describe_violations(violations)

        # a guess: refused on the page, the terminal keeps waiting
        field.fill("BCDF-GHJK" if phrase != "BCDF-GHJK" else "BCDF-GHJB")
        holder.get_by_role("button", name="Approve").click()
        holder.get_by_role("alert").filter(
            has_text="That is not the phrase this request's terminal shows"
        ).wait_for()
        _assert_nowhere(holder, stack, request_id, phrase)
        assert cli.process.poll() is None
        save_screenshot(holder, "approve-typed-phrase.png")

        # read out by whoever ran the command, as the terminal printed it
        holder.get_by_label(LABEL).fill(phrase)
        holder.get_by_role("button", name="Approve").click()
        holder.get_by_text("The values are on their way to your terminal").wait_for()
        assert cli.exit_code() == 0, cli.stderr()
        assert cli.process.stdout is not None
        assert CANARY in cli.process.stdout.read().decode()
    finally:
        if cli is not None:
            cli.stop()
        owner.context.close()
        holder.context.close()


def _form_posts_phrase(page_text: str, form_id: str) -> bool:
    """The form `form_id` holds the typed-phrase field (and so posts it)."""
    start = page_text.index(f'id="{form_id}"')
    return 'name="phrase"' in page_text[start : page_text.index("</form>", start)]


def test_sign_in_and_break_glass_forms_ask_for_the_phrase_too(stack: LiveStack) -> None:
    """Without JavaScript: a terminal sign-in and an owner's break-glass release."""
    owner = new_user(stack, "owner")
    bundle_id = create_bundle_over_http(owner, "production/api")
    add_key(owner, bundle_id, "API_TOKEN", CANARY)
    saved = owner.post("/account/workspace-policy", {"require_phrase": "on"})
    assert saved.status_code == 302
    with stack.api_app.app_context():
        add_member("u-alice-typed", owner.tenant_id, "member")
    with stack.signed(owner.user_id, owner.tenant_id) as api:
        rule = {"min_role": None, "user_ids": ["u-alice-typed"]}  # the owner may only break glass
        assert api.put(f"/api/v1/bundles/{bundle_id}/approvers", json=rule).status_code == 200

    login = stack.browser().post(
        "/api/v1/logins",
        json={"client_pubkey": encode_public_key(generate_keypair()), "workspace": owner.workspace},
    )
    login_id, login_phrase = login.json()["id"], login.json()["user_code"]
    page = owner.get(f"/approve/{login_id}")
    assert LABEL in page.text and _form_posts_phrase(page.text, "sign-in-form")
    assert login_phrase not in page.text
    wrong = owner.post(f"/approve/{login_id}", {"decision": "sign_in", "phrase": "BCDF-GHJK"})
    assert wrong.status_code == 403 and "That is not the phrase" in wrong.text
    assert login_phrase not in wrong.text
    right = owner.post(f"/approve/{login_id}", {"decision": "sign_in", "phrase": login_phrase})
    assert right.status_code == 200 and "signed in" in right.text.lower()

    request = open_request(stack, owner.workspace)
    page = owner.get(f"/approve/{request['id']}?bundle_id={bundle_id}")
    assert _form_posts_phrase(page.text, "break-glass-form")
    assert request["user_code"] not in page.text
    form = {"bundle_id": bundle_id, "include_keys": "API_TOKEN", "reason": "INC-9"}
    path = f"/approve/{request['id']}/break-glass"
    refused = owner.post(path, {**form, "phrase": "BCDF-GHJK"})
    assert refused.status_code == 403 and "That is not the phrase" in refused.text
    released = owner.post(path, {**form, "phrase": request["user_code"].lower()})
    assert released.status_code == 200, released.text
