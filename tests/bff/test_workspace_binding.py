"""Issue #11, attack 1 replayed with real processes: a link holder of another workspace.

The victim's real `envcat run` waits for a request to its workspace. An attacker
who signed up on the same server opens the approval link and tries to approve
with a bundle of their own, named like the victim's. The page says the request is
for another workspace; the api refuses every decision with the same 404 as an
unknown request; neither workspace's audit log records anything; the victim's
command does not run. Then the victim approves and the command runs with the
victim's value, and the CLI names who approved, from which workspace and bundle.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.bff import Browser, add_key, create_bundle, new_user
from tests.support.cli_process import WatchedCli
from tests.support.signed import add_member
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

ENVCAT = Path(sys.executable).parent / "envcat"
WAIT = 30


class RunningCli(WatchedCli):
    """`envcat run` in a subprocess with its own config dir; stderr read as it comes."""

    def __init__(self, stack: LiveStack, workspace: str, home: Path, out: Path) -> None:
        argv = [str(ENVCAT), "run", "demo/app", "-w", workspace, "-k", "DATABASE_URL"]
        argv += ["--server", stack.bff_url, "--no-qr", "--timeout", "60", "--"]
        argv += ["sh", "-c", f'printf %s "$DATABASE_URL" > {out}']
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CONFIG_HOME": str(home)}
        super().__init__(argv, env, wait=WAIT)

    def finish(self) -> tuple[int, str]:
        return self.exit_code(), self.stderr()


def _audit_targets(stack: LiveStack, who: Browser) -> list[str]:
    with stack.signed(who.user_id, who.tenant_id) as api:
        events: list[dict[str, Any]] = api.get("/api/v1/audit").json()["events"]
    return [str(event["target"]) for event in events]


def _victim_and_attacker(stack: LiveStack) -> tuple[Browser, str, Browser, str]:
    victim, attacker = new_user(stack, "victim"), new_user(stack, "attacker")
    victim_bundle = create_bundle(victim, "demo/app")
    add_key(victim, victim_bundle, "DATABASE_URL", "postgres://victim.internal/app")
    attacker_bundle = create_bundle(attacker, "demo/app")  # named like the victim's
    add_key(attacker, attacker_bundle, "DATABASE_URL", "postgres://attacker.example/steal")
    return victim, victim_bundle, attacker, attacker_bundle


def test_a_member_of_another_workspace_cannot_decide_and_the_cli_gets_nothing(
    stack: LiveStack, tmp_path: Path
) -> None:
    victim, victim_bundle, attacker, attacker_bundle = _victim_and_attacker(stack)
    out = tmp_path / "ran"
    cli = RunningCli(stack, victim.workspace, tmp_path, out)
    try:
        request_id = cli.request_id()
        page = attacker.get(f"/approve/{request_id}")
        assert page.status_code == 404
        assert "This request is for another workspace" in page.text
        assert victim.workspace in page.text and "Switch to" not in page.text
        form = {"bundle_id": attacker_bundle, "include_keys": "DATABASE_URL"}
        refused = attacker.post(f"/approve/{request_id}", form)
        assert refused.status_code == 404
        assert "This request is for another workspace" in refused.text
        denied = attacker.post(f"/approve/{request_id}", {"decision": "deny"})
        assert denied.status_code == 404
        # Straight to the api, signed as the attacker: the same answer as an unknown id.
        with stack.signed(attacker.user_id, attacker.tenant_id) as api:
            body = {"bundle_id": attacker_bundle, "include_keys": ["DATABASE_URL"]}
            theirs = api.post(f"/api/v1/requests/{request_id}/encrypt-from-bundle", json=body)
            unknown = api.post(f"/api/v1/requests/{'z' * 32}/encrypt-from-bundle", json=body)
            deny = api.post(f"/api/v1/requests/{request_id}/deny")
        assert (theirs.status_code, theirs.json()) == (unknown.status_code, unknown.json())
        assert theirs.status_code == deny.status_code == 404
        assert request_id not in _audit_targets(stack, attacker)
        assert request_id not in _audit_targets(stack, victim)
        assert cli.process.poll() is None and not out.exists()  # still waiting; nothing ran

        approved = victim.post(
            f"/approve/{request_id}", {"bundle_id": victim_bundle, "include_keys": "DATABASE_URL"}
        )
        assert approved.status_code == 200, approved.text
        code, stderr = cli.finish()
        assert code == 0, stderr
        assert out.read_text() == "postgres://victim.internal/app"
        assert f"in {victim.workspace}" in stderr and "demo/app" in stderr
        assert re.search(r"approved by victim-[0-9a-f]+@example\.test", stderr), stderr
        assert "attacker" not in stderr
    finally:
        cli.stop()


def test_a_member_of_several_workspaces_switches_to_the_requests(stack: LiveStack) -> None:
    team = new_user(stack, "team")  # owns the "team-…" workspace
    ann = new_user(stack, "ann")  # acts in her personal workspace
    with stack.api_app.app_context():
        add_member(ann.user_id, team.tenant_id, "member")
    body = {"client_pubkey": "A" * 43 + "=", "workspace": team.workspace}
    created = httpx.post(f"{stack.bff_url}/api/v1/requests", json=body)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    page = ann.get(f"/approve/{request_id}")
    assert page.status_code == 404 and "Switch to" in page.text
    switched = ann.post(
        "/workspaces/switch", {"tenant_id": team.tenant_id, "next": f"/approve/{request_id}"}
    )
    assert (switched.status_code, switched.headers["Location"]) == (303, f"/approve/{request_id}")
    now = ann.get(f"/approve/{request_id}")
    assert now.status_code == 200 and "Verification phrase" in now.text
    assert re.search(rf"<dt>Workspace</dt><dd><code>{team.workspace}</code>", now.text)
    # a workspace she does not belong to cannot be switched to
    stranger = new_user(stack, "stranger")
    ann.post("/workspaces/switch", {"tenant_id": stranger.tenant_id, "next": "/bundles"})
    assert ann.get("/api/v1/me").json()["tenant"]["id"] == team.tenant_id
