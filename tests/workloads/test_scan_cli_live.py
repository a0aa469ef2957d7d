"""`envcat scan` with a signed-in terminal and with `--oidc` against a live stack (issue #19).

Real api, bff and worker on loopback (SQLite: the credential, not the database, is the
subject), a real loopback OIDC issuer and the stand-in for GitHub's token service; the
CLI runs in-process with real HTTP. With no ENVCAT_TOKEN the terminal's `envcat login`
token is used; with `--oidc` every call gets a fresh ID token (each is spent by its
call), and one given token is refused where more than one call would be needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from envcat.cli.main import cli
from envcat.services import user_tokens
from tests.support.bundles_as_code import store_login
from tests.support.signed import add_member
from tests.support.stack import LiveStack, live_stack
from tests.workloads.issuer import (
    AUDIENCE,
    OIDC_SETTINGS,
    REPOSITORY,
    GithubTokenService,
    LoopbackIssuer,
)

CANARY = "canary-scan-cli-credential-9f3a"
OWN = "envcat.workspace-value"


@dataclass
class World:
    stack: LiveStack
    slug: str
    tenant: str
    user: str
    bundle_id: str
    repo: Path


@pytest.fixture
def world(
    sqlite_url: str, redis_url: str, broker_url: str, tmp_path: Path, issuer: LoopbackIssuer
) -> Iterator[World]:
    with live_stack(sqlite_url, redis_url, broker_url, **OIDC_SETTINGS) as stack:
        account = stack.sign_up("scan-owner@example.test", "correct horse battery staple")
        tenant, user = account["tenant"]["id"], account["user"]["id"]
        with stack.signed(user, tenant) as api:
            bundle = api.post("/api/v1/bundles", json={"name": "production/api"}).json()
            added = api.post(
                f"/api/v1/bundles/{bundle['id']}/keys",
                json={"name": "DATABASE_URL", "value": CANARY},
            )
            assert added.status_code == 201, added.text
        repo = tmp_path / "repo"
        repo.mkdir()
        (repo / "settings.py").write_text(
            f'DATABASE_URL = "{CANARY}"\nOTHER = "just-some-long-harmless-string"\n'
        )
        yield World(stack, account["tenant"]["slug"], tenant, user, bundle["id"], repo)


def _scan(world: World, *args: str, **environ: str) -> Result:
    env = {
        "ENVCAT_SERVER": world.stack.bff_url,
        "ENVCAT_WORKSPACE": world.slug,
        "ENVCAT_TOKEN": None,
        "ENVCAT_ID_TOKEN": None,
        "ACTIONS_ID_TOKEN_REQUEST_URL": None,
        **environ,
    }
    argv = ["scan", str(world.repo), "--format", "json", *args]
    done = CliRunner().invoke(cli, argv, env=env)
    assert CANARY not in done.output
    return done


def _own(done: Result) -> set[tuple[str, str]]:
    findings: list[dict[str, Any]] = json.loads(done.stdout)["findings"]
    return {(f["key"], f["path"]) for f in findings if f["rule"] == OWN}


def test_scan_uses_the_terminals_sign_in_and_refuses_a_viewers(
    world: World, tmp_path: Path
) -> None:
    with world.stack.api_app.app_context():
        add_member("u-viewer", world.tenant, "viewer")
        owner, _ = user_tokens.issue(world.tenant, world.user, "laptop")
        viewer, _ = user_tokens.issue(world.tenant, "u-viewer", "laptop")
    signed_in = store_login(tmp_path / "owner", world.stack.bff_url, world.slug, owner)
    found = _scan(world, **signed_in)
    assert found.exit_code == 1, found.output
    assert _own(found) == {("DATABASE_URL", "settings.py")}
    assert "new leak alert" in found.stderr

    as_viewer = store_login(tmp_path / "viewer", world.stack.bff_url, world.slug, viewer)
    refused = _scan(world, **as_viewer)
    assert refused.exit_code == 4 and "member role" in refused.stderr


def _scan_policy(world: World, issuer: LoopbackIssuer) -> None:
    body = {
        "name": "scan from ci",
        "issuer": issuer.url,
        "audience": AUDIENCE,
        "rules": [{"claim": "repository", "op": "eq", "value": REPOSITORY}],
        "bundle_id": world.bundle_id,
        "scan": True,
    }
    with world.stack.signed(world.user, world.tenant) as api:
        assert api.post("/api/v1/workload-policies", json=body).status_code == 201


def test_scan_oidc_mints_a_token_per_call_and_one_given_token_serves_one_call(
    world: World, issuer: LoopbackIssuer, tmp_path: Path
) -> None:
    github = GithubTokenService(issuer)
    try:
        refused = _scan(world, "--oidc", "--audience", AUDIENCE, **github.environ)
        assert refused.exit_code == 4  # no policy with the scan permission yet
        _scan_policy(world, issuer)
        asked = len(github.audiences)
        found = _scan(world, "--oidc", "--audience", AUDIENCE, **github.environ)
        assert found.exit_code == 1, found.output
        assert _own(found) == {("DATABASE_URL", "settings.py")}
        assert len(github.audiences) - asked == 2  # the lookup and the leak report
    finally:
        github.stop()

    one = {"ENVCAT_ID_TOKEN": issuer.mint()}
    single = _scan(world, "--oidc", **one)
    assert single.exit_code == 1 and _own(single) == {("DATABASE_URL", "settings.py")}
    assert "were not reported" in single.stderr
    too_many = _scan(world, "--oidc", "--batch-size", "1", **{"ENVCAT_ID_TOKEN": issuer.mint()})
    assert too_many.exit_code == 2 and "good for one call" in too_many.stderr
    token_file = tmp_path / "id-token"
    token_file.write_text(one["ENVCAT_ID_TOKEN"])
    replayed = _scan(world, "--oidc", "--id-token-file", str(token_file))
    assert replayed.exit_code == 4 and "already used" in replayed.stderr
