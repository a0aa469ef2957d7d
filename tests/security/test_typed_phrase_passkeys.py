"""A passkey approval where the workspace requires approvers to type the phrase, with real
processes: Chromium's virtual authenticator on the approval page, the real `envcat get`
in a project that lists the approver's passkey.

The typed phrase goes with the page's statement request, which the server refuses
before any passkey prompt when it is wrong: the page says why, nothing is posted, the
CLI keeps waiting, and the person can correct it and approve; the statement the passkey
signs (the phrase, the CLI's key) reaches the browser only after the right phrase.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.passkey_world import CANARY, OTHER_CANARY, World, trust_ada
from tests.support.stack import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHRASE_LINE = re.compile(r"Verification phrase:\s+([A-Z]{4}-[A-Z]{4})")
LABEL = "Type the verification phrase your terminal shows"


@pytest.fixture
def typed_phrase(stack: LiveStack, world: World) -> Iterator[None]:
    """ada's workspace requires the typed phrase for this test only (the world is the
    module's, so a later test must not inherit the policy)."""
    ada = world.ada

    def require(on: bool) -> None:
        with stack.signed(ada.user_id, ada.tenant_id) as api:
            saved = api.put("/api/v1/workspace/policy", json={"require_phrase": on})
            assert saved.status_code == 200, saved.text

    require(True)
    yield
    require(False)


@pytest.mark.usefixtures("typed_phrase")
def test_a_wrong_typed_phrase_costs_no_passkey_ceremony_and_the_right_one_approves(
    stack: LiveStack, world: World, waiting: Any
) -> None:
    ada = world.ada
    trust_ada(world)
    cli = waiting()
    request_id = cli.request_id()
    while not (found := PHRASE_LINE.search(cli.stderr())):
        cli.seen.append(cli.lines.get(timeout=cli.wait))
    phrase = found.group(1)

    page = ada.page
    posted: list[str] = []
    statements: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda request: posted.append(request.url) if request.method == "POST" else None,
    )

    def keep_statement(route: Any) -> None:
        response = route.fetch()
        if response.ok:
            statements.append(response.json())
        route.fulfill(response=response)

    page.route(re.compile(r"/statement$"), keep_statement)
    page.goto(f"{stack.settings.public_url}/approve/{request_id}")
    assert phrase not in page.content()
    page.get_by_label(LABEL).fill("BCDF-GHJK" if phrase != "BCDF-GHJK" else "BCDF-GHJB")
    page.get_by_role("button", name="Approve").click()
    page.locator("[data-passkey-status]").filter(
        has_text="That is not the phrase this request's terminal shows"
    ).wait_for()
    # refused at the statement: no ceremony, no approval posted, nothing learned
    assert [url for url in posted if url.endswith(f"/approve/{request_id}")] == []
    assert statements == [] and phrase not in page.content()
    assert cli.process.poll() is None

    page.get_by_label(LABEL).fill(phrase.lower().replace("-", " "))
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("The values are on their way to your terminal").wait_for()
    assert [s["statement"]["user_code"] for s in statements] == [phrase]
    code, stdout, stderr = cli.finish()
    assert code == 0, stderr
    assert json.loads(stdout) == {"DATABASE_URL": CANARY, "OTHER": OTHER_CANARY}
    assert "passkey approval verified" in stderr
    page.unroute(re.compile(r"/statement$"))
