"""The expiry sweep (DESIGN §6): bounded batches, each request handled once.

Both indexes are claimed with ZREM, so two sweeps running at once (or one
retried after a crash) split the work instead of repeating it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from envcat.services import audit, metrics
from envcat.services.access_requests import store
from envcat.services.access_requests.delivery import SYSTEM_ACTOR
from envcat.services.runtime import current

log = logging.getLogger("envcat.sweeps")
BATCH_SIZE = 500
MAX_BATCHES = 20  # per run: a backlog larger than this waits for the next sweep


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did."""

    pruned: int  # never-approved requests that expired
    unclaimed: int  # approved requests whose payload nobody collected


def _prune_pending(now: float, batch_size: int) -> int:
    r = current().redis
    total = 0
    for _ in range(MAX_BATCHES):
        removed = store.prune_pending(r, now, batch_size)
        total += len(removed)
        # Stop on an empty claim, not a short one: a concurrent sweep may have taken
        # part of this batch while more is still waiting behind it.
        if not removed:
            break
    if total:
        metrics.REQUESTS_EXPIRED.labels(stage="pending").inc(total)
    return total


def _audit_unclaimed(entries: list[store.Unclaimed], now: float) -> int:
    r = current().redis
    for done, entry in enumerate(entries):
        try:
            audit.record(
                entry.tenant_id,
                SYSTEM_ACTOR,
                "request.expired",
                entry.request_id,
                details={"approved_by": entry.decided_by, "bundle_id": entry.bundle_id},
            )
        except Exception:
            # Give back what this sweep claimed but did not record; a later sweep retries.
            for left in entries[done:]:
                store.release_unclaimed(r, left, now)
            if done:
                metrics.REQUESTS_EXPIRED.labels(stage="unclaimed").inc(done)
            raise
    metrics.REQUESTS_EXPIRED.labels(stage="unclaimed").inc(len(entries))
    return len(entries)


def _expire_unclaimed(now: float, batch_size: int) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        claimed = store.claim_unclaimed(current().redis, now, batch_size)
        total += _audit_unclaimed(claimed, now)
        if not claimed:
            break
    return total


def sweep_expired_requests(
    batch_size: int = BATCH_SIZE, *, now: float | None = None
) -> SweepReport:
    """Prune expired pending ids and audit `request.expired` for uncollected approvals."""
    now = time.time() if now is None else now
    report = SweepReport(
        pruned=_prune_pending(now, batch_size),
        unclaimed=_expire_unclaimed(now, batch_size),
    )
    metrics.PENDING_REQUESTS.set(store.pending_count(current().redis))
    if report.pruned or report.unclaimed:
        log.info(
            "expired requests swept", extra={"pruned": report.pruned, "unclaimed": report.unclaimed}
        )
    return report
