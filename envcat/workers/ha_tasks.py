"""Tasks that keep approvals moving through a Redis failover (issue #21)."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from envcat.services.access_requests import redrive
from envcat.workers import tasks

log = logging.getLogger("envcat.redrive")


@shared_task(name="envcat.redrive_approvals", **tasks.RETRY_OPTIONS)
def redrive_approvals() -> None:
    """Publish again the task of every approval recorded but not carried out (beat)."""
    stuck = redrive.stuck_approvals(time.time())
    for request_id, approval_mac in stuck:
        tasks.encrypt_from_bundle.delay(request_id, approval_mac)
    if stuck:
        log.warning("approvals sent again", extra={"count": len(stuck)})
