"""The Celery application factory (STYLE: app factories)."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask

from envcat.core import redisconn
from envcat.core.settings import Settings
from envcat.models import db
from envcat.services.runtime import create_service_app
from envcat.workers import observability

QUEUES = ("approvals", "provisioning", "maintenance", "notifications", "connectors")
TASK_ROUTES = {
    "envcat.encrypt_from_bundle": {"queue": "approvals"},
    "envcat.ping": {"queue": "approvals"},
    "envcat.provision_clerk_event": {"queue": "provisioning"},
    "envcat.sweep_expired_requests": {"queue": "maintenance"},
    "envcat.rotate_kms": {"queue": "maintenance"},
    "envcat.ship_audit_sinks": {"queue": "maintenance"},
    "envcat.ship_audit": {"queue": "maintenance"},
    "envcat.verify_audit_chains": {"queue": "maintenance"},
    "envcat.notify_request": {"queue": "notifications"},
    "envcat.notify_decision": {"queue": "notifications"},
    "envcat.send_invite": {"queue": "notifications"},
    "envcat.notify_leak": {"queue": "notifications"},
    "envcat.redrive_approvals": {"queue": "maintenance"},
    "envcat.connector_sync_link": {"queue": "connectors"},
    "envcat.connector_sync_due": {"queue": "connectors"},
    "envcat.connector_test_connection": {"queue": "connectors"},
}
# A killed worker's message comes back after this many seconds on a Redis broker;
# it must be well below REQUEST_TTL (the tasks are idempotent, an early redelivery is harmless).
VISIBILITY_TIMEOUT_FRACTION = 0.2
REDRIVE_INTERVAL_SECONDS = 10.0
# Under Sentinel a publish waits out a failover (the primary is re-elected in seconds)
# instead of failing the approval at once.
SENTINEL_PUBLISH_RETRY = {
    "max_retries": 8,
    "interval_start": 0.25,
    "interval_step": 0.5,
    "interval_max": 1.0,
}


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
        include=[
            "envcat.workers.tasks",
            "envcat.workers.audit_tasks",
            "envcat.workers.notification_tasks",
            "envcat.workers.scan_tasks",
            "envcat.workers.ha_tasks",
            "envcat.workers.connector_tasks",
        ],
    )
    broker = redisconn.broker_options(settings)
    celery.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": max(10, int(settings.request_ttl * VISIBILITY_TIMEOUT_FRACTION)),
            # kombu looks for such messages only every interval * throttle seconds
            # (10 * 10 by default): look every 2 s, so recovery is visibility_timeout + 2 s.
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
            **broker.get("transport_options", {}),  # Sentinel: the primary's name
        },
        broker_use_ssl=broker.get("broker_use_ssl"),  # rediss://: CA and client certificate
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A worker that loses its broker (a Redis failover) lets its running tasks finish:
        # they are idempotent, and a delivery sealed now beats one redelivered after the
        # visibility timeout. Said explicitly: Celery 6 turns this on by default.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_queue="approvals",
        task_routes=TASK_ROUTES,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep-expired-requests": {
                "task": "envcat.sweep_expired_requests",
                "schedule": float(settings.sweep_interval),
            },
            "ship-audit-sinks": {
                "task": "envcat.ship_audit_sinks",
                "schedule": float(settings.audit_sink_interval),
            },
            "verify-audit-chains": {
                "task": "envcat.verify_audit_chains",
                "schedule": float(settings.audit_verify_interval),
            },
            "redrive-approvals": {  # issue #21: approvals a Redis failover left behind
                "task": "envcat.redrive_approvals",
                "schedule": REDRIVE_INTERVAL_SECONDS,
            },
            "connector-sync-due": {
                "task": "envcat.connector_sync_due",
                "schedule": float(settings.connector_sweep_interval),
            },
        },
    )
    if "transport_options" in broker:
        celery.conf.task_publish_retry_policy = SENTINEL_PUBLISH_RETRY
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
