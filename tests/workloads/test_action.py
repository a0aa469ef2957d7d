"""The GitHub Action's shell steps, run with bash against a live stack (issue #16).

`action.yml` is parsed, each step's `${{ inputs.* }}` is filled in as the runner
would, and its `run:` script is executed by bash with a fake `$GITHUB_ENV` and a
stand-in for GitHub's ID-token service. The values, multi-line and hostile, must
reach `$GITHUB_ENV` exactly, and stdout must carry nothing but `::add-mask::` lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.github import parse_github_env
from tests.support.stack import LiveStack, live_stack
from tests.workloads.issuer import OIDC_SETTINGS, GithubTokenService, LoopbackIssuer

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
HOSTILE = {
    "PEM_KEY": "-----BEGIN KEY-----\nMIIcanary1\nMIIcanary2\n-----END KEY-----\n",
    "INJECTED": "x\nghadelimiter_deadbeef\nEVIL=1\nOTHER<<EOF\nowned\nEOF",
    "SHELLY": "$(touch pwned-by-value) `id` ${HOME} 'q' \"dq\" %0A",
}
INPUT = re.compile(r"\$\{\{\s*inputs\.([A-Za-z0-9_-]+)\s*\}\}")


def _inputs(**given: str) -> dict[str, str]:
    defaults = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    return {**defaults, **given}


def _run_steps(
    inputs: dict[str, str], environ: dict[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    results = []
    for step in ACTION["runs"]["steps"]:
        step_env = {
            name: INPUT.sub(lambda match: inputs[match.group(1)], str(value))
            for name, value in (step.get("env") or {}).items()
        }
        result = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            capture_output=True,
            text=True,
            env={**environ, **step_env},
            cwd=environ["RUNNER_TEMP"],
            timeout=60,
            check=False,
        )
        results.append(result)
        if result.returncode != 0:
            break
    return results


@pytest.fixture
def stack(
    sqlite_url: str, redis_url: str, broker_url: str, issuer: LoopbackIssuer
) -> Iterator[tuple[LiveStack, str]]:
    with live_stack(sqlite_url, redis_url, broker_url, **OIDC_SETTINGS) as running:
        account = running.sign_up("action@example.test", "correct horse battery staple")
        with running.signed(account["user"]["id"], account["tenant"]["id"]) as admin:
            bundle = admin.post("/api/v1/bundles", json={"name": "ci/deploy"}).json()
            for name, value in HOSTILE.items():
                added = admin.post(
                    f"/api/v1/bundles/{bundle['id']}/keys", json={"name": name, "value": value}
                )
                assert added.status_code == 201, added.text
            policy = admin.post(
                "/api/v1/workload-policies",
                json={
                    "name": "ci",
                    "issuer": issuer.url,
                    "audience": running.bff_url,  # the action's default audience: the server
                    "rules": [{"claim": "repository", "op": "eq", "value": "acme/api"}],
                    "bundle_id": bundle["id"],
                    "mode": "automatic",
                },
            )
            assert policy.status_code == 201, policy.text
        yield running, account["tenant"]["slug"]


def _environ(tmp_path: Path, service: GithubTokenService) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ENVCAT_", "ACTIONS_"))}
    (tmp_path / "github_env").write_text("EARLIER=kept\n")
    return {
        **base,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "GITHUB_ENV": str(tmp_path / "github_env"),
        "GITHUB_PATH": str(tmp_path / "github_path"),
        "GITHUB_ACTION_PATH": str(ROOT),
        "RUNNER_TEMP": str(tmp_path),
        **service.environ,
    }


def test_no_input_is_expanded_inside_a_script() -> None:
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step["run"], step["name"]  # inputs travel as env only


def test_the_action_puts_hostile_values_into_github_env_exactly(
    stack: tuple[LiveStack, str], issuer: LoopbackIssuer, tmp_path: Path
) -> None:
    running, slug = stack
    service = GithubTokenService(issuer)
    try:
        results = _run_steps(
            _inputs(server=running.bff_url, workspace=slug, bundle="ci/deploy", install="false"),
            _environ(tmp_path, service),
        )
    finally:
        service.stop()
    assert [r.returncode for r in results] == [0, 0], results[-1].stderr
    written = parse_github_env((tmp_path / "github_env").read_text())
    assert written == {"EARLIER": "kept", **HOSTILE}
    masks = results[1].stdout.splitlines()
    assert masks and all(line.startswith("::add-mask::") for line in masks)
    assert "::add-mask::MIIcanary1" in masks and "::add-mask::MIIcanary2" in masks
    assert "canary" not in results[1].stderr
    assert not (tmp_path / "pwned-by-value").exists()  # the value's $(...) never ran
    assert service.audiences == [running.bff_url]


def test_a_key_input_cannot_glob_or_inject(
    stack: tuple[LiveStack, str], issuer: LoopbackIssuer, tmp_path: Path
) -> None:
    running, slug = stack
    service = GithubTokenService(issuer)
    (tmp_path / "PEM_KEY").write_text("")  # a `*` that globbed would ask for PEM_KEY
    try:
        results = _run_steps(
            _inputs(
                server=running.bff_url, workspace=slug, keys="* ; touch pwned", install="false"
            ),
            {**_environ(tmp_path, service)},
        )
    finally:
        service.stop()
    assert results[-1].returncode == 2  # usage error: `*` is not a key name
    assert "is not a variable name" in results[-1].stderr
    assert not (tmp_path / "pwned").exists()
    assert parse_github_env((tmp_path / "github_env").read_text()) == {"EARLIER": "kept"}
