"""`envcat plan` / `envcat apply` against a live stack, on SQLite and PostgreSQL (issue #16).

The CLI runs in-process (CliRunner) with a real httpx client to the real bff, signed
in with a user token kept in the file store, as `envcat login` leaves it. Apply
refuses deletions without --prune (changing nothing), is idempotent, and refuses a
key the library lacks: values never come from the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from envcat.cli.declared import load
from envcat.cli.errors import UsageProblem
from envcat.services import user_tokens
from tests.support.bundles_as_code import (
    bundles_of,
    envcat_runner,
    state_of,
    store_login,
    write_code,
)
from tests.support.signed import add_member
from tests.support.stack import LiveStack, live_stack


@pytest.fixture
def stack(database_url: str, redis_url: str, broker_url: str) -> Iterator[LiveStack]:
    with live_stack(database_url, redis_url, broker_url) as running:
        yield running


def test_plan_apply_round_trip_with_prune_refusal_and_idempotence(
    stack: LiveStack, tmp_path: Path
) -> None:
    ada = stack.sign_up("ada@example.test", "correct horse battery staple")
    bob = stack.sign_up("bob@example.test", "correct horse battery staple")
    slug, tenant, user = ada["tenant"]["slug"], ada["tenant"]["id"], ada["user"]["id"]
    with stack.api_app.app_context():
        add_member(bob["user"]["id"], tenant, "member")
        token, _ = user_tokens.issue(tenant, user, "laptop")
    with stack.signed(user, tenant) as api:
        for name in ("DATABASE_URL", "STRIPE_LIVE_KEY", "OLD_KEY"):
            assert api.post("/api/v1/keys", json={"name": name, "value": "v"}).status_code == 201
        legacy = api.post("/api/v1/bundles", json={"name": "legacy/app"}).json()
    environ = store_login(tmp_path / "config", stack.bff_url, slug, token)
    code = tmp_path / "envcat.toml"
    write_code(code, "bob@example.test")

    envcat = envcat_runner(stack, code, slug, environ)
    planned = envcat("plan")
    assert planned.exit_code == 0, planned.output
    assert "+ bundle production/api" in planned.stdout
    assert "+ production/api key STRIPE_KEY (from STRIPE_LIVE_KEY)" in planned.stdout
    assert "- bundle legacy/app  (needs --prune)" in planned.stdout
    assert "~ production/api requesters: members" in planned.stdout

    refused = envcat("apply")
    assert refused.exit_code == 1 and "need --prune" in refused.stderr
    assert bundles_of(stack, user, tenant) == {"legacy/app"}  # nothing at all was changed

    applied = envcat("apply", "--prune")
    assert applied.exit_code == 0, applied.output
    state = state_of(stack, user, tenant)
    assert state["bundles"] == {"production/api"}
    assert state["keys"] == {("DATABASE_URL", None, True), ("STRIPE_LIVE_KEY", "STRIPE_KEY", False)}
    assert state["approvers"] == ("admin", ["bob@example.test"], True)
    assert state["requesters"] == "members"  # issue #17
    assert state["policies"] == [("deploy from main", "automatic", ["DATABASE_URL"], True)]
    assert legacy["id"] not in repr(state)

    again = envcat("apply")
    assert again.exit_code == 0 and "No changes" in again.stdout

    write_code(code, "bob@example.test", required="false", description="The API")
    changed = envcat("plan")
    assert "~ bundle production/api: description 'API' -> 'The API'" in changed.stdout
    assert "~ production/api key DATABASE_URL" in changed.stdout
    assert envcat("apply").exit_code == 0
    assert ("DATABASE_URL", None, False) in state_of(stack, user, tenant)["keys"]
    assert "No changes" in envcat("plan").stdout

    # A key the library lacks is refused: values never come from the file.
    write_code(
        code, "bob@example.test", required="false", description="The API", extra="NEW_KEY = {}"
    )
    missing = envcat("apply")
    assert missing.exit_code == 1 and "NEW_KEY is not in the workspace's library" in missing.stderr
    assert "NEW_KEY" not in repr(state_of(stack, user, tenant)["keys"])


def test_requesters_in_the_file_must_be_anyone_or_members(tmp_path: Path) -> None:
    code = tmp_path / "envcat.toml"
    code.write_text('[bundles."production/api"]\nrequesters = "members"\n')
    assert load(code).bundles[0].requesters == "members"
    code.write_text('[bundles."production/api"]\nrequesters = "everyone"\n')
    with pytest.raises(UsageProblem, match=r"requesters: must be one of \['anyone', 'members'\]"):
        load(code)
