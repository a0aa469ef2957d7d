"""Secret-scanning tasks (issue #19) on the `notifications` queue: ids only, never a value."""

from __future__ import annotations

from celery import shared_task

from envcat.services import leak_alerts
from envcat.workers.notification_tasks import NOTIFY_OPTIONS


@shared_task(name="envcat.notify_leak", **NOTIFY_OPTIONS)
def notify_leak(tenant_id: str, event_id: int) -> None:
    """Tell the workspace's admins and webhook that a value leaked, suggesting rotation."""
    leak_alerts.notify_leak(tenant_id, event_id)
