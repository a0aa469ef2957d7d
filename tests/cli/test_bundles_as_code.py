"""`envcat plan` / `envcat apply` against a live stack, on SQLite and PostgreSQL (issue #16).

The CLI runs in-process (CliRunner) with a real httpx client to the real bff, signed
in with a user token kept in the file store, as `envcat login` leaves it. Apply
refuses deletions without --prune (changing nothing), is idempotent, and refuses a
key the library lacks: values never come from the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from envcat.cli.declared import load
from envcat.cli.errors import UsageProblem
from envcat.cli.main import cli
from envcat.cli.tokens import FileBackend, StoredLogin, entry_name
from envcat.services import user_tokens
from tests.support.signed import add_member
from tests.support.stack import LiveStack, live_stack

ISSUER = "https://token.actions.githubusercontent.com"
FILE = """
[bundles."production/api"]
description = "{description}"
tags = ["prod"]
requesters = "members"

[bundles."production/api".keys]
DATABASE_URL = {{ required = {required} }}
STRIPE_KEY = {{ from = "STRIPE_LIVE_KEY" }}
{extra}

[bundles."production/api".approvers]
min_role = "admin"
users = ["{bob}"]
no_self_approval = true

[[bundles."production/api".workloads]]
name = "deploy from main"
issuer = "{issuer}"
audience = "https://envcat.example"
rules = [{{ claim = "repository", op = "eq", value = "acme/api" }}]
keys = ["DATABASE_URL"]
mode = "automatic"
"""


@pytest.fixture
def stack(database_url: str, redis_url: str, broker_url: str) -> Iterator[LiveStack]:
    with live_stack(database_url, redis_url, broker_url) as running:
        yield running


def _write(
    path: Path, bob: str, *, required: str = "true", description: str = "API", extra: str = ""
) -> None:
    text = FILE.format(
        required=required, description=description, extra=extra, bob=bob, issuer=ISSUER
    )
    path.write_text(text)


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
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "ENVCAT_TOKEN_STORE": "file"}
    store = FileBackend(tmp_path / "config" / "envcat" / "tokens.json")
    stored = StoredLogin(token=token, workspace=slug, expires_at="2999-01-01T00:00:00+00:00")
    store.write(entry_name(stack.bff_url, slug), json.dumps(stored.__dict__))
    code = tmp_path / "envcat.toml"
    _write(code, "bob@example.test")

    def envcat(*args: str) -> Result:
        with httpx.Client(base_url=stack.bff_url, timeout=30) as client:
            argv = [*args, "-f", str(code), "-w", slug, "--server", stack.bff_url]
            return CliRunner().invoke(cli, argv, obj=client, env=environ)

    planned = envcat("plan")
    assert planned.exit_code == 0, planned.output
    assert "+ bundle production/api" in planned.stdout
    assert "+ production/api key STRIPE_KEY (from STRIPE_LIVE_KEY)" in planned.stdout
    assert "- bundle legacy/app  (needs --prune)" in planned.stdout
    assert "~ production/api requesters: members" in planned.stdout

    refused = envcat("apply")
    assert refused.exit_code == 1 and "need --prune" in refused.stderr
    assert _bundles(stack, user, tenant) == {"legacy/app"}  # nothing at all was changed

    applied = envcat("apply", "--prune")
    assert applied.exit_code == 0, applied.output
    state = _state(stack, user, tenant)
    assert state["bundles"] == {"production/api"}
    assert state["keys"] == {("DATABASE_URL", None, True), ("STRIPE_LIVE_KEY", "STRIPE_KEY", False)}
    assert state["approvers"] == ("admin", ["bob@example.test"], True)
    assert state["requesters"] == "members"  # issue #17
    assert state["policies"] == [("deploy from main", "automatic", ["DATABASE_URL"])]
    assert legacy["id"] not in repr(state)

    again = envcat("apply")
    assert again.exit_code == 0 and "No changes" in again.stdout

    _write(code, "bob@example.test", required="false", description="The API")
    changed = envcat("plan")
    assert "~ bundle production/api: description 'API' -> 'The API'" in changed.stdout
    assert "~ production/api key DATABASE_URL" in changed.stdout
    assert envcat("apply").exit_code == 0
    assert ("DATABASE_URL", None, False) in _state(stack, user, tenant)["keys"]
    assert "No changes" in envcat("plan").stdout

    # A key the library lacks is refused: values never come from the file.
    _write(code, "bob@example.test", required="false", description="The API", extra="NEW_KEY = {}")
    missing = envcat("apply")
    assert missing.exit_code == 1 and "NEW_KEY is not in the workspace's library" in missing.stderr
    assert "NEW_KEY" not in repr(_state(stack, user, tenant)["keys"])


def _bundles(stack: LiveStack, user: str, tenant: str) -> set[str]:
    with stack.signed(user, tenant) as api:
        return {b["name"] for b in api.get("/api/v1/bundles").json()["bundles"]}


def _state(stack: LiveStack, user: str, tenant: str) -> dict[str, Any]:
    with stack.signed(user, tenant) as api:
        listed = api.get("/api/v1/bundles").json()["bundles"]
        bundle = api.get(f"/api/v1/bundles/{listed[0]['id']}").json()
        rule = api.get(f"/api/v1/bundles/{bundle['id']}/approvers").json()
        policies = api.get("/api/v1/workload-policies").json()["items"]
        requesters = api.get(f"/api/v1/bundles/{bundle['id']}/requesters").json()
    return {
        "requesters": requesters["requesters"],
        "bundles": {b["name"] for b in listed},
        "keys": {(k["name"], k["alias"], k["required"]) for k in bundle["keys"]},
        "approvers": (
            rule["min_role"],
            [u["email"] for u in rule["users"]],
            rule["no_self_approval"],
        ),
        "policies": [(p["name"], p["mode"], p["keys"]) for p in policies],
    }


def test_requesters_in_the_file_must_be_anyone_or_members(tmp_path: Path) -> None:
    code = tmp_path / "envcat.toml"
    code.write_text('[bundles."production/api"]\nrequesters = "members"\n')
    assert load(code).bundles[0].requesters == "members"
    code.write_text('[bundles."production/api"]\nrequesters = "everyone"\n')
    with pytest.raises(UsageProblem, match=r"requesters: must be one of \['anyone', 'members'\]"):
        load(code)
