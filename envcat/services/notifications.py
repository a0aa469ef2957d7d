"""Telling the right people (issue #17): request and decision notices, invitation emails.

Request creation is anonymous, so the api admits a notice only when the request
names a bundle of its workspace, at most once per bundle and client address per
NOTIFY_DEDUPE_SECONDS and at most NOTIFY_MAX_PER_WORKSPACE per workspace and
hour; past that a request is still created but notifies nobody. Notices carry
names, the verification phrase, the requester's context and the approval link,
never a value: nothing here reads a key's value. Tasks carry ids only and
re-read state; each email recipient and the webhook are marked sent in Redis, so
a retry does not repeat them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import smtplib
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from envcat.models import AuditEvent, Bundle, Invite, NotificationTarget, Tenant, User, db
from envcat.services import approvers, break_glass, members, outbound, phrases
from envcat.services.access_requests import store
from envcat.services.decision_rules import channel_open
from envcat.services.runtime import current

log = logging.getLogger("envcat.notifications")
SENT_TTL = 24 * 3600
# where the workspace requires approvers to type the phrase, notices never carry it
TYPED = "not shown: approvers type the one the requester's terminal shows"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CONTEXT_LABELS = (
    ("hostname", "Host"),
    ("cwd", "Directory"),
    ("command", "Command"),
    ("git_remote", "Git remote"),
    ("client", "Client"),
)


def _one_line(text: str, limit: int = 200) -> str:
    return _CONTROL.sub(" ", text)[:limit]


def slack_escape(text: str) -> str:
    """Slack's three control characters, so requester text cannot add mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _bundle_of(tenant_id: str, name: str | None, bundle_id: str | None) -> Bundle | None:
    """The workspace's bundle a request names (by id first, then by name), or None."""
    where = Bundle.id == bundle_id if bundle_id else Bundle.name == (name or "")
    return db.session.execute(
        select(Bundle).where(Bundle.tenant_id == tenant_id, where)
    ).scalar_one_or_none()


def _target(tenant_id: str) -> NotificationTarget | None:
    return db.session.get(NotificationTarget, tenant_id)


def has_channel(tenant_id: str) -> bool:
    """Whether the workspace has a webhook, or email to send through SMTP."""
    target = _target(tenant_id)
    return channel_open(
        target.webhook_url if target is not None else None,
        target.email_enabled if target is not None else None,
        current().settings.smtp_host,
    )


def admit_request(request_id: str, client_ip: str) -> bool:
    """Whether a new request should notify its approvers (dedupe and per-workspace cap)."""
    runtime = current()
    request = store.get(runtime.redis, request_id)
    if request is None or not (request.bundle or request.bundle_id):
        return False
    if not has_channel(request.tenant_id):  # the common case without SMTP or a webhook
        return False
    bundle = _bundle_of(request.tenant_id, request.bundle, request.bundle_id)
    if bundle is None:
        return False
    settings = runtime.settings
    client = hashlib.sha256(client_ip.encode("utf-8")).hexdigest()[:16]
    if settings.notify_dedupe_seconds:
        dedupe = f"notify:dd:{request.tenant_id}:{bundle.id}:{client}"
        if not runtime.redis.set(dedupe, "1", nx=True, ex=settings.notify_dedupe_seconds):
            return False
    window = f"notify:cap:{request.tenant_id}:{int(time.time() // 3600)}"
    pipe = runtime.redis.pipeline(transaction=True)
    pipe.incr(window)
    pipe.expire(window, 3600)
    count = int(pipe.execute()[0])
    if count > settings.notify_max_per_workspace:
        log.warning("notification cap reached", extra={"tenant_id": request.tenant_id})
        return False
    return True


def _mark_sent(key: str) -> bool:
    """True once per key (a retried task skips channels already done)."""
    return bool(current().redis.set(key, "1", nx=True, ex=SENT_TTL))


def _unmark(key: str) -> None:
    current().redis.delete(key)


@dataclass
class Notice:
    """What one notice says, on every channel."""

    event: str
    tenant_id: str
    workspace: str
    bundle_id: str | None
    bundle: str
    request_id: str
    phrase: str | None  # None where approvers must type it: no notice carries it then
    link: str
    requester: dict[str, str] = field(default_factory=dict)
    decided_by: str | None = None
    keys: list[str] = field(default_factory=list)
    reason: str = ""  # a break-glass release's reason (issue #17)

    def headline(self) -> str:
        if self.event == "request.created":
            return f"Approval requested: {self.bundle} in {self.workspace}"
        if self.event == "request.break_glass":
            return f"BREAK-GLASS release by {self.decided_by}: {self.bundle} in {self.workspace}"
        verb = "approved" if self.event == "request.approved" else "denied"
        what = f"{self.bundle} in {self.workspace}" if self.bundle else self.workspace
        return f"Request {verb} by {self.decided_by or 'someone'}: {what}"

    def lines(self) -> list[str]:
        lines = [
            f"Workspace: {self.workspace}",
            f"Bundle: {self.bundle or '-'}",
            f"Verification phrase: {self.phrase or TYPED}",
        ]
        if self.keys:
            lines.append(f"Keys: {', '.join(self.keys)}")
        if self.reason:
            lines.append(f"Reason: {self.reason}")
        for name, label in (("requester", "Requested by"), *CONTEXT_LABELS, ("ip", "Address")):
            if value := self.requester.get(name):
                lines.append(f"{label}: {value}")
        if self.event == "request.created":
            if self.phrase is None:
                lines.append("Ask the requester for their terminal's phrase, then decide:")
            else:
                lines.append("Check that the phrase matches the requester's terminal, then decide:")
            lines.append(self.link)
        return lines

    def webhook_body(self) -> bytes:
        text = "\n".join(
            [f"*{slack_escape(self.headline())}*"] + [slack_escape(x) for x in self.lines()]
        )
        body: dict[str, Any] = {
            "text": text,
            "event": self.event,
            "workspace": self.workspace,
            "bundle": self.bundle or None,
            "request_id": self.request_id,
            "verification_phrase": self.phrase,
            "requester": self.requester,
            "approval_url": self.link,
        }
        if self.decided_by is not None:
            body["decided_by"] = self.decided_by
            body["keys"] = self.keys
        if self.reason:
            body["reason"] = self.reason
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _link(request_id: str) -> str:
    return f"{current().settings.public_url.rstrip('/')}/approve/{request_id}"


def send(notice: Notice, recipients: list[str]) -> None:
    """Email each recipient, then the webhook; each channel at most once per notice."""
    settings = current().settings
    target = _target(notice.tenant_id)
    base = f"notify:sent:{notice.request_id}:{notice.event}"
    wants_email = target is None or target.email_enabled
    if settings.smtp_host and wants_email:
        shown = f" ({notice.phrase})" if notice.phrase else ""
        subject = _one_line(f"[EnvCat] {notice.headline()}{shown}")
        text = "\n".join([notice.headline(), "", *notice.lines(), ""])
        for address in recipients:
            # one mark per recipient: a retry after a failure mid-list skips who got it
            mark = f"{base}:email:{hashlib.sha256(address.encode()).hexdigest()[:16]}"
            if not _mark_sent(mark):
                continue
            try:
                outbound.send_email(settings, address, subject, text)
            except smtplib.SMTPRecipientsRefused:  # for good (5xx): the others still get it
                log.warning("recipient refused", extra={"tenant_id": notice.tenant_id})
            except Exception:
                _unmark(mark)
                raise
    has_webhook = target is not None and target.webhook_url and target.webhook_secret
    if has_webhook and target is not None and _mark_sent(f"{base}:webhook"):
        _post(notice, target)


def _post(notice: Notice, target: NotificationTarget) -> None:
    keyring = current().keyring
    assert target.webhook_url is not None and target.webhook_secret is not None  # noqa: S101
    url = keyring.decrypt(target.webhook_url, tenant_id=target.tenant_id, key_id="webhook-url")
    secret = keyring.decrypt(
        target.webhook_secret, tenant_id=target.tenant_id, key_id="webhook-secret"
    )
    try:
        outbound.post_webhook(url, secret, notice.webhook_body(), current().settings)
    except (outbound.UnsafeDestination, outbound.WebhookRefused) as exc:
        log.warning("webhook not delivered", extra={"tenant_id": target.tenant_id, "why": str(exc)})
    except Exception:
        _unmark(f"notify:sent:{notice.request_id}:{notice.event}:webhook")
        raise


def _requester(request: store.AccessRequest) -> dict[str, str]:
    found = {name: _one_line(str(value)) for name, value in request.context.items() if value}
    ip = current().redis.hget(store.request_key(request.id), "ip")
    if ip:
        found["ip"] = str(ip)
    return found


def notify_request(request_id: str) -> None:
    """Tell a pending request's bundle approvers (task body); gone or decided = nothing."""
    request = store.get(current().redis, request_id)
    if request is None or request.status != "pending" or request.approval is not None:
        return
    bundle = _bundle_of(request.tenant_id, request.bundle, request.bundle_id)
    if bundle is None:
        return
    notice = Notice(
        event="request.created",
        tenant_id=request.tenant_id,
        workspace=request.workspace,
        bundle_id=bundle.id,
        bundle=bundle.name,
        request_id=request.id,
        phrase=phrases.shown(request),
        link=_link(request.id),
        requester=_requester(request),
    )
    send(notice, [email for _, email in approvers.eligible(request.tenant_id, bundle.id)])


def notify_decision(tenant_id: str, request_id: str, action: str) -> None:
    """Tell the bundle's approvers and the webhook that a request was approved or denied."""
    event = db.session.execute(
        select(AuditEvent)
        .where(
            AuditEvent.tenant_id == tenant_id,
            AuditEvent.target == request_id,
            AuditEvent.action == action,
        )
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    tenant = db.session.get(Tenant, tenant_id)
    if event is None or tenant is None:
        return
    decider = db.session.get(User, event.actor)
    details = event.details or {}
    request = store.get(current().redis, request_id)  # still there unless already taken
    bundle_id = str(details.get("bundle_id") or "") or None
    notice = Notice(
        event=action,
        tenant_id=tenant_id,
        workspace=tenant.slug,
        bundle_id=bundle_id,
        bundle=str(details.get("bundle_name") or ""),
        request_id=request_id,
        phrase=phrases.shown(request) if request is not None else "-",
        link=_link(request_id),
        requester=_requester(request) if request is not None else {},
        decided_by=decider.email if decider is not None else event.actor,
        keys=[str(k) for k in details.get("keys", [])],
        reason=_one_line(str(details.get("reason") or ""), 500),
    )
    recipients = [e for _, e in approvers.eligible(tenant_id, bundle_id)] if bundle_id else []
    if action == break_glass.ACTION and bundle_id:  # and every owner and admin (issue #17)
        recipients = break_glass.recipients(tenant_id, bundle_id)
    send(notice, recipients)


def send_invite_email(invite_id: str) -> None:
    """Email an invitation's link (task body); the encrypted token is deleted once sent."""
    runtime = current()
    sealed = runtime.redis.get(members.mail_key(invite_id))
    invite = db.session.get(Invite, invite_id)
    if sealed is None or invite is None:
        return
    if invite.accepted_at is not None or invite.revoked_at is not None:
        runtime.redis.delete(members.mail_key(invite_id))
        return
    token = runtime.keyring.decrypt(str(sealed), tenant_id=invite.tenant_id, key_id=invite.id)
    tenant = db.session.get(Tenant, invite.tenant_id)
    inviter = db.session.get(User, invite.invited_by)
    name = tenant.name if tenant is not None else "a workspace"
    link = f"{runtime.settings.public_url.rstrip('/')}/invites/accept?token={token}"
    text = "\n".join(
        [
            f"{inviter.email if inviter else 'Someone'} invited you to {name} on EnvCat "
            f"as {invite.role}.",
            "",
            f"Sign in (or create an account) as {invite.email}, then open:",
            link,
            "",
            "The link works once and expires; ignore this email if you did not expect it.",
        ]
    )
    subject = _one_line(f"[EnvCat] You are invited to {name}")
    outbound.send_email(runtime.settings, invite.email, subject, text)
    runtime.redis.delete(members.mail_key(invite_id))
