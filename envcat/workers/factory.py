"""The Celery application factory (STYLE: app factories)."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask

from envcat.core.settings import Settings
from envcat.models import db
from envcat.services.runtime import create_service_app
from envcat.workers import observability

QUEUES = ("approvals", "provisioning", "maintenance", "connectors")
TASK_ROUTES = {
    "envcat.encrypt_from_bundle": {"queue": "approvals"},
    "envcat.ping": {"queue": "approvals"},
    "envcat.provision_clerk_event": {"queue": "provisioning"},
    "envcat.sweep_expired_requests": {"queue": "maintenance"},
    "envcat.rotate_kms": {"queue": "maintenance"},
    "envcat.connector_sync_link": {"queue": "connectors"},
    "envcat.connector_sync_due": {"queue": "connectors"},
    "envcat.connector_test_connection": {"queue": "connectors"},
}
# A killed worker's message comes back after this many seconds on a Redis broker;
# it must be well below REQUEST_TTL (the tasks are idempotent, an early redelivery is harmless).
VISIBILITY_TIMEOUT_FRACTION = 0.2


def create_celery(settings: Settings, flask_app: Flask | None = None) -> Celery:
    """Build the Celery app whose tasks run inside a Flask app context."""
    context_app = flask_app or create_service_app(settings, "envcat.worker")

    class FlaskTask(Task[Any, Any]):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with context_app.app_context():
                return self.run(*args, **kwargs)

    celery: Celery = Celery(
        "envcat",
        task_cls=FlaskTask,
        include=["envcat.workers.tasks", "envcat.workers.connector_tasks"],
    )
    celery.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": max(10, int(settings.request_ttl * VISIBILITY_TIMEOUT_FRACTION)),
            # kombu looks for such messages only every interval * throttle seconds
            # (10 * 10 by default): look every 2 s, so recovery is visibility_timeout + 2 s.
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
        },
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue="approvals",
        task_routes=TASK_ROUTES,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep-expired-requests": {
                "task": "envcat.sweep_expired_requests",
                "schedule": float(settings.sweep_interval),
            },
            "connector-sync-due": {
                "task": "envcat.connector_sync_due",
                "schedule": float(settings.connector_sweep_interval),
            },
        },
    )
    celery.flask_app = context_app  # type: ignore[attr-defined]  # reached by tests and commands
    observability.install(celery, settings)
    celery.set_default()
    return celery


@worker_process_init.connect
def _dispose_engine_after_fork(**_: Any) -> None:
    """Forked pool processes must not share pooled database connections."""
    from celery import current_app

    flask_app: Flask | None = getattr(current_app, "flask_app", None)
    if flask_app is not None:
        with flask_app.app_context():
            db.engine.dispose()
