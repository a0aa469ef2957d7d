"""The beat sweep queues each due link once and a real worker runs it; a second run of a
link waits while the first holds the link's lock."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from flask import Flask

from envcat.models import db, utcnow
from envcat.services.connectors import links, sync
from envcat.services.runtime import current
from envcat.workers import connector_tasks
from tests.connectors.support import (
    ProviderProxy,
    aws,
    aws_connection,
    bundle_with,
    link,
    link_row,
    owner,
)


def test_due_links_are_claimed_once_and_synced_by_a_worker(
    service_app: Flask, celery_worker: object, proxy: ProviderProxy
) -> None:
    aws(proxy.upstream).create_secret(Name="due/A", SecretString="a")
    actor = owner()
    connection_id = aws_connection(actor, proxy.url)
    due = link(
        actor,
        connection_id,
        bundle_with(actor, "due", {}),
        prefix="due/",
        direction="pull",
        interval_seconds=600,
    )
    later = link(
        actor, connection_id, bundle_with(actor, "later", {}), prefix="later/", direction="pull"
    )
    row = link_row(later)
    row.next_sync_at = utcnow() + timedelta(hours=1)
    db.session.commit()

    connector_tasks.sync_due.delay()
    deadline = time.monotonic() + 30
    while link_row(due).last_status != "ok":
        assert time.monotonic() < deadline, "the due link was never synced"
        time.sleep(0.05)
    synced = link_row(due)
    assert synced.last_summary["pulled"] == 1 and synced.run_id is None
    assert synced.next_sync_at is not None
    assert link_row(later).last_status == "never"
    assert links.claim_due() == []  # nothing is due any more: a second sweep queues nothing


def test_two_sweeps_racing_claim_a_link_once(service_app: Flask, proxy: ProviderProxy) -> None:
    actor = owner()
    link(
        actor,
        aws_connection(actor, proxy.url),
        bundle_with(actor, "b", {}),
        prefix="b/",
        direction="pull",
    )
    first, second = links.claim_due(), links.claim_due()
    assert len(first) == 1 and second == []


def test_a_run_waits_while_another_worker_holds_the_link(
    service_app: Flask, proxy: ProviderProxy
) -> None:
    actor = owner()
    link_id = link(
        actor,
        aws_connection(actor, proxy.url),
        bundle_with(actor, "b", {}),
        prefix="b/",
        direction="pull",
    )
    run_id = links.start_run("t-conn", link_id)
    current().redis.set(f"connector:lock:{link_id}", "someone-else", ex=30)
    with pytest.raises(sync.Busy):
        sync.sync_link(link_id, run_id)
    assert proxy.calls == []  # no provider call while another run holds the link
    current().redis.delete(f"connector:lock:{link_id}")
    assert sync.sync_link(link_id, run_id) == "done"
    assert sync.sync_link(link_id, run_id) == "stale"  # a redelivered message is a no-op


def test_an_unreachable_provider_is_retried_with_the_same_run_then_reported(
    service_app: Flask, celery_worker: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connector_tasks, "PROVIDER_RETRY_SECONDS", 0)
    monkeypatch.setattr(connector_tasks, "MAX_PROVIDER_RETRIES", 2)
    actor = owner()
    # A provider that accepts each connection and hangs up at once, counting attempts.
    server = socket.create_server(("127.0.0.1", 0))
    attempts: list[float] = []

    def hang_up() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            attempts.append(time.monotonic())
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    nowhere = f"http://127.0.0.1:{server.getsockname()[1]}"
    link_id = link(
        actor,
        aws_connection(actor, nowhere),
        bundle_with(actor, "b", {}),
        prefix="b/",
        direction="pull",
    )
    run_id = links.start_run("t-conn", link_id)
    assert link_row(link_id).run_id == run_id
    connector_tasks.sync_link.delay(link_id, run_id)
    deadline = time.monotonic() + 30
    while link_row(link_id).last_status != "error":
        assert time.monotonic() < deadline, "the run was never given up"
        time.sleep(0.05)
    server.close()
    row = link_row(link_id)
    assert row.run_id is None and "unreachable" in row.last_error
    assert len(attempts) == 3  # the first try and two retries, then it gives up
