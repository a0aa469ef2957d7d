"""Notification tasks (issue #17) on the `notifications` queue: ids only, never a value."""

from __future__ import annotations

import smtplib
from collections.abc import Sequence

import httpx
from celery import shared_task

from envcat.services import notifications, outbound
from envcat.workers.tasks import TRANSIENT_ERRORS, RetryOptions

# A mail server or webhook receiver that is briefly away is worth a retry with backoff;
# smtplib's errors are OSErrors, as are refused connections.
NOTIFY_RETRY_ON = (
    *TRANSIENT_ERRORS,
    OSError,
    httpx.TransportError,
    outbound.WebhookRetry,
    outbound.MailRetry,
)


class NotifyOptions(RetryOptions):
    """RETRY_OPTIONS plus errors never worth a retry."""

    dont_autoretry_for: Sequence[type[BaseException]]


NOTIFY_OPTIONS: NotifyOptions = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": NOTIFY_RETRY_ON,
    "dont_autoretry_for": (smtplib.SMTPRecipientsRefused,),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 6,
}


@shared_task(name="envcat.notify_request", **NOTIFY_OPTIONS)
def notify_request(request_id: str) -> None:
    """Tell a pending request's bundle approvers (email and/or the workspace's webhook)."""
    notifications.notify_request(request_id)


@shared_task(name="envcat.notify_decision", **NOTIFY_OPTIONS)
def notify_decision(tenant_id: str, request_id: str, action: str) -> None:
    """Tell approvers and the webhook that a request was approved or denied."""
    notifications.notify_decision(tenant_id, request_id, action)


@shared_task(name="envcat.send_invite", **NOTIFY_OPTIONS)
def send_invite(invite_id: str) -> None:
    """Email an invitation link (the token waits encrypted in Redis, never in the message)."""
    notifications.send_invite_email(invite_id)
