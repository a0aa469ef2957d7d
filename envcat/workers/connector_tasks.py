"""Connector tasks (issue #18) on the `connectors` queue: ids in, provider calls out.

A message carries a link id and a run id (or a connection id), never a credential or
a value. Runs are resumable (envcat.services.connectors.sync), so late acks and
redeliveries are safe; a redelivery while the first run still lives waits its turn.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from envcat.services.connectors import connections, links, sync
from envcat.workers.tasks import RETRY_OPTIONS

# A throttling or unreachable provider: come back later, with the same run id.
PROVIDER_RETRY_SECONDS = 15
MAX_PROVIDER_RETRIES = 8
# The link is locked by a live run, or by a killed one until its lock expires.
BUSY_RETRY_SECONDS = 5


@shared_task(name="envcat.connector_sync_link", bind=True, **RETRY_OPTIONS)
def sync_link(self: Task[Any, Any], link_id: str, run_id: str) -> str:
    """Run or resume one sync of a link; a finished or superseded run is a no-op."""
    try:
        return sync.sync_link(link_id, run_id)
    except sync.Busy:
        # Another worker holds the link (this is a redelivery while it runs): try later.
        raise self.retry(countdown=BUSY_RETRY_SECONDS, max_retries=None) from None
    except sync.Transient as exc:
        if self.request.retries >= MAX_PROVIDER_RETRIES:
            sync.fail_run(link_id, run_id, str(exc))
            return "error"
        raise self.retry(countdown=PROVIDER_RETRY_SECONDS * (self.request.retries + 1)) from None


@shared_task(name="envcat.connector_sync_due", **RETRY_OPTIONS)
def sync_due() -> int:
    """Queue a run for every link whose next sync is due (beat); return how many."""
    claimed = links.claim_due()
    for link_id, run_id in claimed:
        sync_link.delay(link_id, run_id)
    return len(claimed)


@shared_task(name="envcat.connector_test_connection", **RETRY_OPTIONS)
def test_connection(tenant_id: str, connection_id: str) -> None:
    """Check a connection's credentials with one cheap read; store and audit the result."""
    connections.record_test(tenant_id, connection_id)
