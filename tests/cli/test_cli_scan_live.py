"""`envcat scan` as a real process on a real git repository against the live stack (issue #19).

The repository is made in the test: the workspace's own value in a file deleted since,
an AWS key on another branch, another workspace's value, an ignored file. The CLI runs
as a subprocess through the bff to the api with real service tokens; the leak alert
goes through the real worker to a loopback SMTP server. The canary value must never
appear in the CLI's output, the audit log, the alert, the server logs or Redis.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text

from tests.support.api import redis_dump
from tests.support.inboxes import SmtpInbox, smtp_inbox
from tests.support.stack import LiveStack, live_stack

ENVCAT = [sys.executable, "-m", "envcat.cli.main"]
CANARY = "canary-scan-value-4b1f9e27c3"
OLD_CANARY = "canary-scan-old-5d2e80aa91"
OTHER = "canary-other-tenant-7c6a1e02"
AWS = "AKIAIOSFODNN7EXAMPLE"
OWN_RULE = "envcat.workspace-value"


@dataclass
class World:
    stack: LiveStack
    inbox: SmtpInbox
    slug: str
    other_slug: str
    scan_token: str
    release_token: str
    other_token: str
    repo: Path
    commits: dict[str, str]
    logs: io.StringIO


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.test",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.test",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def _make_repo(repo: Path) -> dict[str, str]:
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("print('hello')\n")
    (repo / "old.env").write_text(f"DEBUG=1\nDATABASE_URL={CANARY}\nLEGACY={OLD_CANARY}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    added = _git(repo, "rev-parse", "HEAD")
    _git(repo, "rm", "-q", "old.env")
    _git(repo, "commit", "-q", "-m", "remove the env file")
    _git(repo, "checkout", "-q", "-b", "feature")
    (repo / "deploy.yml").write_text(f"region: eu\naws_access_key_id: {AWS}\ntoken: {OTHER}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "feature")
    feature = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")
    (repo / ".gitignore").write_text("ignored.env\n")
    (repo / "ignored.env").write_text(f"DATABASE_URL={CANARY}\n")
    (repo / "settings.py").write_text(f'DATABASE_URL = "{CANARY}"\n')
    return {"added": added, "feature": feature}


def _token(client: Any, bundle_id: str, name: str, scopes: list[str]) -> str:
    body = {"name": name, "bundle_id": bundle_id, "scopes": scopes}
    created = client.post("/api/v1/service-tokens", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["scopes"] == scopes
    return str(created.json()["token"])


def _workspace(stack: LiveStack, email: str, keys: dict[str, str]) -> tuple[Any, str, str]:
    account = stack.sign_up(email, "correct horse battery staple")
    client = stack.signed(account["user"]["id"], account["tenant"]["id"])
    bundle = client.post("/api/v1/bundles", json={"name": "production/api"}).json()
    for name, value in keys.items():
        added = client.post(
            f"/api/v1/bundles/{bundle['id']}/keys", json={"name": name, "value": value}
        )
        assert added.status_code == 201, added.text
    return client, bundle["id"], account["tenant"]["slug"]


@pytest.fixture
def world(
    sqlite_url: str, redis_url: str, broker_url: str, tmp_path: Path, json_logs: io.StringIO
) -> Iterator[World]:
    with (
        smtp_inbox() as inbox,
        live_stack(
            sqlite_url, redis_url, broker_url, smtp_host="127.0.0.1", smtp_port=inbox.port
        ) as stack,
    ):
        owner, bundle_id, slug = _workspace(
            stack, "owner@example.test", {"DATABASE_URL": OLD_CANARY}
        )
        [key] = owner.get("/api/v1/keys").json()["keys"]
        assert owner.patch(f"/api/v1/keys/{key['id']}", json={"value": CANARY}).status_code == 200
        other, other_bundle, other_slug = _workspace(stack, "rival@example.test", {"RIVAL": OTHER})
        world = World(
            stack=stack,
            inbox=inbox,
            slug=slug,
            other_slug=other_slug,
            scan_token=_token(owner, bundle_id, "ci scan", ["scan"]),
            release_token=_token(owner, bundle_id, "ci deploy", ["release"]),
            other_token=_token(other, other_bundle, "rival scan", ["scan"]),
            repo=tmp_path / "repo",
            commits=_make_repo(tmp_path / "repo"),
            logs=json_logs,
        )
        owner.close()
        other.close()
        yield world


def _scan(world: World, *args: str, token: str | None, slug: str | None = None) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ENVCAT_", "ACTIONS_"))}
    env = {
        **base,
        "HOME": str(world.repo.parent),
        "XDG_CONFIG_HOME": str(world.repo.parent / "config"),
        "ENVCAT_SERVER": world.stack.bff_url,
        "ENVCAT_WORKSPACE": slug or world.slug,
        **({"ENVCAT_TOKEN": token} if token else {}),
    }
    done = subprocess.run(
        [*ENVCAT, "scan", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=world.repo,
        timeout=60,
        check=False,
    )
    for secret in (CANARY, OLD_CANARY, OTHER, AWS):
        assert secret not in done.stdout + done.stderr
    return done


def _own(findings: list[dict[str, Any]]) -> set[tuple[str, str, int, str | None]]:
    return {
        (f["key"], f["path"], f["line"], f["commit"]) for f in findings if f["rule"] == OWN_RULE
    }


def test_history_finds_own_values_in_deleted_files_and_other_branches_by_name(
    world: World,
) -> None:
    done = _scan(world, "--git-history", "--format", "json", token=world.scan_token)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["own_values_checked"] is True
    added = world.commits["added"]
    # the deleted file: the current value and a kept old version, both found by name
    assert _own(report["findings"]) == {
        ("DATABASE_URL", "old.env", 2, added),
        ("DATABASE_URL", "old.env", 3, added),
    }
    detected = {(f["rule"], f["path"], f["commit"]) for f in report["findings"]}
    assert ("detect-secrets.aws-access-key", "deploy.yml", world.commits["feature"]) in detected
    assert all(f["secret"].endswith("chars)") for f in report["findings"])
    # another workspace's value on the feature branch is not this workspace's
    assert not any(f["key"] == "RIVAL" for f in report["findings"])

    rival = _scan(
        world, "--git-history", "--format", "json", token=world.other_token, slug=world.other_slug
    )
    assert _own(json.loads(rival.stdout)["findings"]) == {
        ("RIVAL", "deploy.yml", 3, world.commits["feature"])
    }

    alert = world.inbox.wait_for(lambda m: "Leaked secret: DATABASE_URL" in str(m["Subject"]))
    body = alert.get_content()
    assert alert["To"] == "owner@example.test"
    assert "old.env:2" in body and added in body and "Rotate DATABASE_URL" in body
    _assert_no_canary_at_rest(world, body)


def _assert_no_canary_at_rest(world: World, alert_body: str) -> None:
    engine = create_engine(world.stack.settings.database_url)
    with engine.connect() as conn:
        events = conn.execute(text("SELECT actor, action, target, details FROM audit_events")).all()
    engine.dispose()
    trail = "\n".join(str(row) for row in events)
    leaked = [row for row in events if row.action == "secret.leaked"]
    assert {json.loads(row.details)["key"] for row in leaked} >= {"DATABASE_URL"}
    assert any(row.action == "scan.checked" for row in events)
    client = redis.Redis.from_url(world.stack.settings.redis_url)
    stored = redis_dump(client)
    client.close()
    for secret in (CANARY, OLD_CANARY, OTHER):
        digest = hashlib.sha256(secret.encode()).hexdigest()
        for place in (trail, stored, alert_body, world.logs.getvalue()):
            assert secret not in place and digest not in place


def test_working_tree_respects_gitignore_and_sarif_is_well_formed(world: World) -> None:
    done = _scan(world, "--format", "sarif", token=world.scan_token)
    assert done.returncode == 1, done.stderr
    log = json.loads(done.stdout)
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "envcat" and driver["version"]
    rules = [rule["id"] for rule in driver["rules"]]
    assert rules[0] == OWN_RULE and len(rules) == len(set(rules))
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["defaultConfiguration"]["level"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]] == result["ruleId"]
        assert result["message"]["text"] and result["level"] == "error"
        [location] = result["locations"]
        physical = location["physicalLocation"]
        assert physical["artifactLocation"]["uri"] and physical["region"]["startLine"] >= 1
    own = [r for r in run["results"] if r["ruleId"] == OWN_RULE]
    assert [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in own] == [
        "settings.py"
    ]  # ignored.env holds the value too, but .gitignore excludes it

    table = _scan(world, token=world.scan_token)
    assert table.returncode == 1 and "settings.py:1" in table.stdout
    assert (
        "value of workspace key DATABASE_URL" in table.stdout and "ca… (28 chars)" in table.stdout
    )


def test_a_token_without_the_scan_scope_is_refused_and_learns_nothing(world: World) -> None:
    done = _scan(world, "--git-history", "--format", "json", token=world.release_token)
    assert done.returncode == 4
    assert "403" in done.stderr and "no scan scope" in done.stderr
    assert done.stdout == ""
    forged = _scan(world, token="ect_0123456789ab_" + "A" * 43)
    assert forged.returncode == 4 and "401" in forged.stderr
    wrong_workspace = _scan(world, token=world.other_token)  # the rival's token, our workspace
    assert wrong_workspace.returncode == 4 and "401" in wrong_workspace.stderr
