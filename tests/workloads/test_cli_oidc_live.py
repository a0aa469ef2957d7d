"""`envcat get/run --oidc` as real processes against the live stack (issue #16).

Real api, bff and Celery worker on loopback, SQLite and PostgreSQL; a real loopback
OIDC issuer; the CLI as a subprocess. A policy match is delivered with no person in
the loop, and the CLI verifies the signed envelope exactly as for a person's approval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.github import parse_github_env
from tests.support.stack import LiveStack, live_stack
from tests.workloads.issuer import AUDIENCE, OIDC_SETTINGS, REF, GithubTokenService, LoopbackIssuer

ENVCAT = [sys.executable, "-m", "envcat.cli.main"]
VALUES = {
    "DATABASE_URL": "postgres://ci:canary-pw-5e1@db/app",
    "MULTI_LINE": "-----BEGIN KEY-----\ncanary-line-2\n-----END KEY-----",
}
LABEL = f"workload:github:acme/api@{REF} run 123"


@pytest.fixture
def stack(
    database_url: str, redis_url: str, broker_url: str, issuer: LoopbackIssuer
) -> Iterator[tuple[LiveStack, str, str]]:
    with live_stack(database_url, redis_url, broker_url, **OIDC_SETTINGS) as running:
        account = running.sign_up("ci-admin@example.test", "correct horse battery staple")
        with running.signed(account["user"]["id"], account["tenant"]["id"]) as admin:
            bundle = admin.post("/api/v1/bundles", json={"name": "production/api"}).json()
            for name, value in VALUES.items():
                added = admin.post(
                    f"/api/v1/bundles/{bundle['id']}/keys", json={"name": name, "value": value}
                )
                assert added.status_code == 201, added.text
            policy = admin.post(
                "/api/v1/workload-policies",
                json={
                    "name": "deploy from main",
                    "issuer": issuer.url,
                    "audience": AUDIENCE,
                    "rules": [
                        {"claim": "repository", "op": "eq", "value": "acme/api"},
                        {"claim": "ref", "op": "glob", "value": "refs/heads/ma*"},
                    ],
                    "bundle_id": bundle["id"],
                    "mode": "automatic",
                },
            )
            assert policy.status_code == 201, policy.text
            token = admin.post(
                "/api/v1/service-tokens",
                json={"name": "legacy", "bundle_id": bundle["id"], "keys": ["DATABASE_URL"]},
            )
            assert token.status_code == 201, token.text
        yield running, account["tenant"]["slug"], token.json()["token"]


def _envcat(
    stack: LiveStack, slug: str, tmp_path: Path, *args: str, **environ: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ENVCAT_", "ACTIONS_"))}
    env = {
        **base,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "ENVCAT_SERVER": stack.bff_url,
        "ENVCAT_WORKSPACE": slug,
        **environ,
    }
    return subprocess.run(
        [*ENVCAT, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def test_a_matching_token_is_delivered_with_no_approval(
    stack: tuple[LiveStack, str, str], issuer: LoopbackIssuer, tmp_path: Path
) -> None:
    running, slug, _ = stack
    token = issuer.mint()
    result = _envcat(
        running,
        slug,
        tmp_path,
        "get",
        "production/api",
        "--oidc",
        "--format",
        "json",
        ENVCAT_ID_TOKEN=token,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == VALUES
    assert f"Approved by trust policy for {LABEL}" in result.stderr
    assert f"approved by {LABEL}" in result.stderr
    assert "Approve this request in a browser" not in result.stderr
    assert token not in result.stdout + result.stderr
    assert "canary" not in result.stderr


def test_format_github_via_the_runners_token_service(
    stack: tuple[LiveStack, str, str], issuer: LoopbackIssuer, tmp_path: Path
) -> None:
    running, slug, _ = stack
    service = GithubTokenService(issuer)
    github_env = tmp_path / "github_env"
    github_env.write_text("EARLIER=kept\n")
    try:
        result = _envcat(
            running,
            slug,
            tmp_path,
            "get",
            "production/api",
            "--oidc",
            "--audience",
            AUDIENCE,
            "--format",
            "github",
            GITHUB_ENV=str(github_env),
            **service.environ,
        )
    finally:
        service.stop()
    assert result.returncode == 0, result.stderr
    assert service.audiences == [AUDIENCE]
    assert parse_github_env(github_env.read_text()) == {"EARLIER": "kept", **VALUES}
    masks = result.stdout.splitlines()
    assert all(line.startswith("::add-mask::") for line in masks)
    assert "::add-mask::canary-line-2" in masks
    assert "canary" not in result.stderr


def test_run_with_oidc_hands_the_values_to_the_command(
    stack: tuple[LiveStack, str, str], issuer: LoopbackIssuer, tmp_path: Path
) -> None:
    running, slug, _ = stack
    child = "import os, sys; sys.exit(0 if os.environ['DATABASE_URL'].endswith('@db/app') else 9)"
    result = _envcat(
        running,
        slug,
        tmp_path,
        "run",
        "production/api",
        "--oidc",
        "--",
        sys.executable,
        "-c",
        child,
        ENVCAT_ID_TOKEN=issuer.mint(),
    )
    assert result.returncode == 0, result.stderr
    assert f"approved by {LABEL}" in result.stderr


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"repository": "evil/api"}, "not allowed: No trust policy of workspace"),
    ({"ref": "refs/heads/feature"}, "not allowed: No trust policy of workspace"),
    ({"aud": "https://another.test"}, "another audience"),
    ({"exp": 1_000_000}, "expired"),
]


def test_tokens_the_policy_does_not_accept_get_nothing(
    stack: tuple[LiveStack, str, str], issuer: LoopbackIssuer, tmp_path: Path
) -> None:
    running, slug, _ = stack
    for claims, expected in REFUSED:
        result = _envcat(
            running,
            slug,
            tmp_path,
            "get",
            "production/api",
            "--oidc",
            ENVCAT_ID_TOKEN=issuer.mint(**claims),
        )
        assert result.returncode == 1, (claims, result.stderr)
        assert expected in result.stderr, (claims, result.stderr)
        assert result.stdout == ""
    reused = issuer.mint()
    first = _envcat(running, slug, tmp_path, "get", "--oidc", ENVCAT_ID_TOKEN=reused)
    assert first.returncode == 0, first.stderr
    again = _envcat(running, slug, tmp_path, "get", "--oidc", ENVCAT_ID_TOKEN=reused)
    assert again.returncode == 1
    assert "already used" in again.stderr and again.stdout == ""


def test_a_service_token_in_envcat_token_is_delivered_with_no_approval(
    stack: tuple[LiveStack, str, str], tmp_path: Path
) -> None:
    running, slug, token = stack
    result = _envcat(
        running, slug, tmp_path, "get", "production/api", "--format", "json", ENVCAT_TOKEN=token
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"DATABASE_URL": VALUES["DATABASE_URL"]}
    assert "approved by service-token:legacy" in result.stderr
    assert token not in result.stdout + result.stderr
    forged = _envcat(
        running, slug, tmp_path, "get", "--format", "json", ENVCAT_TOKEN=token[:-2] + "xx"
    )
    assert forged.returncode == 1 and forged.stdout == ""
    assert "refused ENVCAT_TOKEN" in forged.stderr
