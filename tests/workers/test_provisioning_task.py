"""envcat.provision_clerk_event on a real worker and a real broker (never eager)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_failure, task_postrun, task_retry
from flask import Flask
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from envcat.core.settings import Settings
from envcat.models import User, WebhookEvent, db
from envcat.services import integrity
from envcat.services.runtime import create_service_app
from envcat.workers import tasks
from envcat.workers.factory import QUEUES, TASK_ROUTES, create_celery
from tests.support.clerk_events import new_id, user_data

TASK = "envcat.provision_clerk_event"


@dataclass
class Runs:
    """What the worker did with provisioning messages, as Celery's signals report it."""

    outcomes: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, outcome: str) -> None:
        with self.changed:
            self.outcomes.append(outcome)
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[str]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.outcomes) >= count, timeout), (
                self.outcomes
            )
            return list(self.outcomes)


@pytest.fixture
def runs(broker_url: str) -> Iterator[Runs]:
    """Record every run of the task; empty the provisioning queue before and after."""
    client = redis.Redis.from_url(broker_url)

    def purge() -> None:
        for key in client.scan_iter("provisioning*"):
            client.delete(key)

    purge()
    seen = Runs()

    def on_postrun(sender: Any = None, state: str | None = None, **_: Any) -> None:
        if sender is not None and sender.name == TASK:
            seen.add(str(state))

    def on_retry(sender: Any = None, **_: Any) -> None:
        if sender is not None and sender.name == TASK:
            seen.add("RETRY-REQUESTED")

    def on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        if sender is not None and sender.name == TASK:
            seen.add(f"FAILED:{type(exception).__name__}")

    task_postrun.connect(on_postrun, weak=False)
    task_retry.connect(on_retry, weak=False)
    task_failure.connect(on_failure, weak=False)
    yield seen
    task_postrun.disconnect(on_postrun)
    task_retry.disconnect(on_retry)
    task_failure.disconnect(on_failure)
    purge()
    client.close()


def record(event_type: str) -> str:
    event_id = new_id("msg")
    db.session.add(WebhookEvent(id=event_id, type=event_type))
    db.session.commit()
    return event_id


def test_task_is_named_routed_and_retries_only_transient_errors() -> None:
    task = tasks.provision_clerk_event
    assert task.name == TASK
    assert TASK_ROUTES[TASK] == {"queue": "provisioning"}
    assert (task.acks_late, task.reject_on_worker_lost) == (True, True)
    retried = cast(Any, task).autoretry_for  # set by the decorator; not in celery-types
    assert OperationalError in retried
    assert not any(issubclass(ValidationError, kind) for kind in retried)


def _send(event_id: str, event_type: str, data: dict[str, Any]) -> None:
    """Enqueue as the webhook view does: the data with the api's MAC of it."""
    mac = integrity.event_mac(event_id, event_type, data)
    tasks.provision_clerk_event.delay(event_id, event_type, data, mac)


@pytest.mark.usefixtures("celery_worker")
def test_redelivered_message_is_a_no_op(service_app: Flask, runs: Runs) -> None:
    uid = new_id("user")
    event_id = record("user.created")
    _send(event_id, "user.created", user_data(uid))
    assert runs.wait_for(1) == ["SUCCESS"]
    db.session.execute(update(User).where(User.id == uid).values(name="Renamed since"))
    db.session.commit()
    _send(event_id, "user.created", user_data(uid))
    assert runs.wait_for(2) == ["SUCCESS", "SUCCESS"]
    db.session.expire_all()
    user = db.session.get(User, uid)
    assert user is not None and user.name == "Renamed since"


@pytest.mark.usefixtures("celery_worker")
def test_a_bad_payload_fails_once_and_is_not_retried(service_app: Flask, runs: Runs) -> None:
    event_id = record("user.created")
    _send(event_id, "user.created", {"id": "user_without_fields"})
    later = record("user.created")
    _send(later, "user.created", user_data(new_id("user")))
    outcomes = runs.wait_for(3)  # failure, its postrun, then the next message
    assert outcomes == ["FAILED:ValueError", "FAILURE", "SUCCESS"]
    db.session.expire_all()
    row = db.session.get(WebhookEvent, event_id)
    assert row is not None and row.processed_at is None  # Svix's copy stays unprocessed


def test_a_database_outage_is_retried(
    settings: Settings, service_app: Flask, runs: Runs, tmp_path: Path
) -> None:
    # A database the worker cannot open: a real OperationalError, as when PostgreSQL is away.
    unreachable = settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'missing' / 'dir' / 'envcat.db'}"}
    )
    app: Celery = create_celery(unreachable, create_service_app(unreachable))
    with start_worker(
        app, pool="solo", queues=list(QUEUES), perform_ping_check=False, shutdown_timeout=30
    ):
        _send(new_id("msg"), "user.created", user_data(new_id("user")))
        assert runs.wait_for(2)[:2] == ["RETRY-REQUESTED", "RETRY"]
