"""Refuse new work while the approval workers are too far behind (issue #22).

When more approvals wait in the queue than APPROVAL_BACKLOG_LIMIT, the workers
cannot clear them before requests expire: a new request would only expire in the
queue. Creating a request and approving one then answer `503 busy` with
`Retry-After`, and nothing is recorded, so the same call succeeds once the
workers catch up. Work already queued is untouched.
"""

from __future__ import annotations

from flask import current_app

from envcat.services import metrics
from envcat.services.errors import Busy
from envcat.services.runtime import current
from envcat.workers.backlog import Backlog

RETRY_AFTER_SECONDS = 5
EXTENSION = "envcat.backlog"


def refuse_when_behind(stage: str) -> None:
    """Raise Busy when the approvals backlog is at the limit (0 turns the check off)."""
    limit = current().settings.approval_backlog_limit
    if limit == 0:
        return
    backlog: Backlog | None = current_app.extensions.get(EXTENSION)
    if backlog is None:
        backlog = current_app.extensions[EXTENSION] = Backlog(current_app.extensions["celery"])
    depth = backlog.depth()
    if depth is not None and depth >= limit:
        metrics.BUSY_REFUSALS.labels(stage=stage).inc()
        raise Busy(
            f"EnvCat is busy: {depth} approvals are waiting for a worker. "
            f"Try again in {RETRY_AFTER_SECONDS} seconds.",
            details=RETRY_AFTER_SECONDS,
        )
