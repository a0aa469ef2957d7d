"""Leak alerts (issue #19): tell a workspace's admins that one of its values is in a repository.

The notice is built from the `secret.leaked` audit event (key name, file, line, commit)
and goes out on the workspace's channels (email to owners and admins, the webhook)
through `notifications`, at most once per channel. It never holds a value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from envcat.models import AuditEvent, Tenant, db
from envcat.services import members, notifications


@dataclass
class LeakNotice(notifications.Notice):
    """A leak notice on the request-notice channels (`request_id` = `leak-<event id>`)."""

    path: str = ""
    line: int = 0
    commit: str | None = None

    def headline(self) -> str:
        return f"Leaked secret: {self.keys[0]} in {self.workspace} — rotate it"

    def lines(self) -> list[str]:
        where = f"{self.path}:{self.line}" + (f" (commit {self.commit})" if self.commit else "")
        return [
            f"Workspace: {self.workspace}",
            f"Key: {self.keys[0]}",
            f"Found in: {where}",
            f"Reported by: {self.requester.get('reporter', '-')}",
            f"Rotate {self.keys[0]} now: its current or an earlier value is in a repository.",
        ]

    def webhook_body(self) -> bytes:
        text = "\n".join(
            [f"*{notifications.slack_escape(self.headline())}*"]
            + [notifications.slack_escape(x) for x in self.lines()]
        )
        body: dict[str, Any] = {
            "text": text,
            "event": self.event,
            "workspace": self.workspace,
            "key": self.keys[0],
            "path": self.path,
            "line": self.line,
            "commit": self.commit,
            "advice": "rotate",
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def notify_leak(tenant_id: str, event_id: int) -> None:
    """Send the notice of one `secret.leaked` event (task body); gone = nothing."""
    event = db.session.execute(
        select(AuditEvent).where(
            AuditEvent.id == event_id,
            AuditEvent.tenant_id == tenant_id,
            AuditEvent.action == "secret.leaked",
        )
    ).scalar_one_or_none()
    tenant = db.session.get(Tenant, tenant_id)
    if event is None or tenant is None or not notifications.has_channel(tenant_id):
        return
    details = event.details or {}
    notice = LeakNotice(
        event="secret.leaked",
        tenant_id=tenant_id,
        workspace=tenant.slug,
        bundle_id=None,
        bundle="",
        request_id=f"leak-{event.id}",
        phrase="-",
        link="",
        requester={"reporter": event.actor},
        keys=[str(details.get("key", ""))],
        path=str(details.get("path", "")),
        line=int(details.get("line") or 0),
        commit=details.get("commit"),
    )
    notifications.send(notice, members.lead_emails(tenant_id))
