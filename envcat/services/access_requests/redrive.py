"""Approvals recorded but never carried out, found and sent again (issue #21).

An approval is recorded in Redis, then its task is published. Between the two, or
after them, a Redis failover can lose a step: the publish failed while the
primary was away and undoing the approval failed too, or the replica promoted
by Sentinel never received the task (replication is asynchronous). The request
then stays pending with its approval until it expires. `stuck_approvals` finds
such requests so the `envcat.redrive_approvals` beat task can publish their task
again: the worker checks the approval's MAC and delivers at most once, however
many messages it gets.
"""

from __future__ import annotations

import redis

from envcat.services.access_requests import store
from envcat.services.runtime import current

# An approval not carried out this long after it was recorded is sent again; a
# normal one is delivered in well under a second.
REDRIVE_AFTER_SECONDS = 10.0
BATCH_SIZE = 500
MAX_PAGES = 20  # 10,000 pending requests per run; more wait for the next one
_MARK_PREFIX = "redrive:"


def _approval_fields(r: redis.Redis, request_ids: list[str]) -> list[list[str | None]]:
    pipe = r.pipeline(transaction=False)
    for request_id in request_ids:
        pipe.hmget(store.request_key(request_id), ["s", "a", "am"])
    rows: list[list[str | None]] = pipe.execute()
    return rows


def stuck_approvals(now: float, *, batch_size: int = BATCH_SIZE) -> list[tuple[str, str]]:
    """(request id, approval MAC) of the pending requests approved over
    REDRIVE_AFTER_SECONDS ago; each is returned once per REDRIVE_AFTER_SECONDS.

    Reads the workspaces' pending indexes, at most MAX_PAGES batches per run.
    """
    r = current().redis
    request_ids = store.pending_ids(r, now, MAX_PAGES * batch_size)
    found = []
    for start in range(0, len(request_ids), batch_size):
        found += _stuck(r, request_ids[start : start + batch_size], now)
    return found


def _stuck(r: redis.Redis, request_ids: list[str], now: float) -> list[tuple[str, str]]:
    found = []
    for request_id, (status, approval, mac) in zip(
        request_ids, _approval_fields(r, request_ids), strict=True
    ):
        if status != "pending" or not approval or not mac:
            continue
        if store.Approval.from_json(approval).approved_at > now - REDRIVE_AFTER_SECONDS:
            continue
        # One resend per window, even with two beats or a slow worker.
        if r.set(_MARK_PREFIX + request_id, "1", nx=True, ex=int(REDRIVE_AFTER_SECONDS)):
            found.append((request_id, mac))
    return found
