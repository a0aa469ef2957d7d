"""Break-glass end to end (issue #17): real api, Celery worker and bff on loopback, a real
SMTP server (aiosmtpd) and webhook receiver, and the real `envcat get` subprocess.

The bundle needs two named approvers; the owner is not one of them. The owner
opens the approval page, which offers the separate Break glass form, and
releases alone with a reason. The CLI receives the values and prints the
break-glass warning, the log holds `request.break_glass` with the reason, and
the approvers and the owner are told by email and the signed webhook — without
the value. The same stack serves the Groups page and the bundle page's rules.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pytest

from tests.support.bff import Browser, csrf_in, module_stack, new_user
from tests.support.cli_process import APPROVAL_URL
from tests.support.inboxes import SmtpInbox, WebhookInbox, smtp_inbox, webhook_inbox
from tests.support.signed import add_member
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

ENVCAT = Path(sys.executable).parent / "envcat"
CANARY = "postgres://break-glass-canary-5d1e@db.internal/app"
REASON = "INC-4242 checkout down, approvers asleep"
WAIT = 45


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[SmtpInbox, WebhookInbox]]:
    with smtp_inbox() as inbox, webhook_inbox() as hooks:
        yield inbox, hooks


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str,
    redis_dbs: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
    receivers: tuple[SmtpInbox, WebhookInbox],
) -> Iterator[LiveStack]:
    inbox, _ = receivers
    with module_stack(
        redis_base_url,
        redis_dbs,
        tmp_path_factory,
        smtp_host="127.0.0.1",
        smtp_port=inbox.port,
        webhook_allow_http_loopback=True,
        webhook_allow_private=True,
    ) as shared:
        yield shared


def _team(stack: LiveStack, owner: Browser, hooks: WebhookInbox) -> tuple[str, str]:
    """demo/app needing 2 of bob and the group oncall (carol); returns (bundle id, secret)."""
    with stack.api_app.app_context():
        for name in ("bob", "carol"):
            add_member(f"u-{name}-{owner.user_id}", owner.tenant_id, "member")
    with stack.signed(owner.user_id, owner.tenant_id) as api:
        bundle = api.post("/api/v1/bundles", json={"name": "demo/app"}).json()
        added = api.post(
            f"/api/v1/bundles/{bundle['id']}/keys", json={"name": "DATABASE_URL", "value": CANARY}
        )
        assert added.status_code == 201, added.text
        oncall = api.post("/api/v1/groups", json={"name": "oncall"}).json()["id"]
        carol = f"u-carol-{owner.user_id}"
        assert api.patch(f"/api/v1/groups/{oncall}", json={"user_ids": [carol]}).is_success
        rule = {
            "min_role": None,
            "user_ids": [f"u-bob-{owner.user_id}"],
            "group_ids": [oncall],
            "approvals_required": 2,
        }
        saved = api.put(f"/api/v1/bundles/{bundle['id']}/approvers", json=rule)
        assert saved.status_code == 200, saved.text
        hook = api.put("/api/v1/notifications", json={"webhook_url": hooks.url}).json()
    return str(bundle["id"]), str(hook["webhook_secret"])


def test_an_owner_breaks_glass_and_everyone_hears_of_it(
    stack: LiveStack,
    receivers: tuple[SmtpInbox, WebhookInbox],
    tmp_path: Path,
) -> None:
    inbox, hooks = receivers
    ada = new_user(stack, "ada")
    bundle_id, secret = _team(stack, ada, hooks)
    (tmp_path / ".envcat.toml").write_text(
        f'server = "{stack.settings.public_url}"\nworkspace = "{ada.workspace}"\n'
        'bundle = "demo/app"\nallow_vars = []\n'
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    cli = subprocess.Popen(
        [str(ENVCAT), "get", "--format", "json", "--no-qr", "--timeout", "60"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stderr is not None
        seen: list[str] = []
        while not (found := APPROVAL_URL.search(line := cli.stderr.readline())):
            assert line, "".join(seen)
            seen.append(line)
        request_id = found.group(1)
        shown = ada.get(f"/approve/{request_id}")
        assert 'data-testid="break-glass"' in shown.text  # the policy holds the owner
        assert "the group oncall" in shown.text
        token = csrf_in(shown.text)
        form = {"bundle_id": bundle_id, "include_keys": "DATABASE_URL", "csrf_token": token}
        empty = ada.client.post(f"/approve/{request_id}/break-glass", data=form)
        assert empty.status_code == 400  # no reason, no release
        done = ada.client.post(
            f"/approve/{request_id}/break-glass", data={**form, "reason": REASON}
        )
        assert done.status_code == 200, done.text
        stdout, stderr = cli.communicate(timeout=WAIT)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, stderr
    assert json.loads(stdout) == {"DATABASE_URL": CANARY}
    assert f"delivered by break-glass: {ada.account['user']['email']} — {REASON}" in stderr
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        events = api.get("/api/v1/audit", params={"action": "request.break_glass"}).json()
    event = next(e for e in events["events"] if e["target"] == request_id)
    assert event["details"]["reason"] == REASON and event["actor"] == ada.user_id
    # a named approver, a group member (the rule names her group) and the owner
    for to in (f"u-bob-{ada.user_id}@", f"u-carol-{ada.user_id}@", ada.account["user"]["email"]):
        mail = inbox.wait_for(partial(_break_glass_mail_to, to))
        assert f"Reason: {REASON}" in mail.get_content()
    hook = hooks.wait_for(lambda h: h.json()["event"] == "request.break_glass")
    assert hook.json()["reason"] == REASON and hook.json()["request_id"] == request_id
    signed = hook.headers["X-EnvCat-Timestamp"].encode() + b"." + hook.body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-EnvCat-Signature"], "v1=" + expected)
    assert all(CANARY.encode() not in raw for raw in inbox.raw)
    assert all(CANARY.encode() not in h.body for h in hooks.hooks)


def test_groups_and_editors_are_managed_from_the_pages(stack: LiveStack) -> None:
    ada = new_user(stack, "ada")
    with stack.api_app.app_context():
        add_member(f"u-dev-{ada.user_id}", ada.tenant_id, "member")
    dev = f"u-dev-{ada.user_id}"
    made = ada.post("/groups/new", {"name": "payments", "user_ids": dev})
    assert made.status_code == 302, made.text
    listed = ada.get("/groups").text
    assert 'data-testid="group-name">payments<' in listed
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        group = api.get("/api/v1/groups").json()["groups"][0]
        bundle = api.post("/api/v1/bundles", json={"name": "pay/api"}).json()
    assert [m["user_id"] for m in group["members"]] == [dev]
    rule = {"min_role": "none", "group_ids": group["id"], "approvals_required": "1"}
    assert ada.post(f"/bundles/{bundle['id']}/approvers", rule).status_code == 302
    editors = {"min_role": "owner", "group_ids": group["id"]}
    assert ada.post(f"/bundles/{bundle['id']}/editors", editors).status_code == 302
    shown = ada.get(f"/bundles/{bundle['id']}").text
    assert shown.count("the group <strong>payments</strong>") == 2  # approvers and editors
    with stack.signed(dev, ada.tenant_id) as api:
        edited = api.patch(f"/api/v1/bundles/{bundle['id']}", json={"description": "by dev"})
        assert edited.status_code == 200, edited.text
        assert api.get(f"/api/v1/bundles/{bundle['id']}/approvers").json()["can_approve"]
    in_use = ada.post(f"/groups/{group['id']}/delete")
    assert in_use.status_code == 302  # refused and flashed: a rule names it
    assert 'data-testid="group-name">payments<' in ada.get("/groups").text


def _break_glass_mail_to(to: str, message: EmailMessage) -> bool:
    return to in str(message["To"]) and "BREAK-GLASS" in str(message["Subject"])
