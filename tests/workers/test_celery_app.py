"""The Celery app runs real tasks through a real broker."""

import uuid

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from flask import Flask

from envcat.core.settings import Settings
from envcat.workers import tasks
from envcat.workers.factory import QUEUES, TASK_ROUTES, create_celery
from tests.support import port_answers


def _ping_round_trip(app: Celery, redis_url: str) -> str | None:
    reply_key = f"test:ping:{uuid.uuid4().hex}"
    app.tasks["envcat.ping"].delay(reply_key)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    popped = client.blpop([reply_key], timeout=20)
    return str(popped[1]) if popped else None


def test_configuration_is_json_only_acks_late_and_routed(celery_app: Celery) -> None:
    conf = celery_app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_ignore_result is True
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.broker_transport_options["visibility_timeout"] < 300
    assert {route["queue"] for route in TASK_ROUTES.values()} == set(QUEUES)
    assert conf.beat_schedule["sweep-expired-requests"]["task"] == "envcat.sweep_expired_requests"


def test_task_runs_on_a_real_worker(
    celery_app: Celery, celery_worker: object, settings: Settings
) -> None:
    assert _ping_round_trip(celery_app, settings.redis_url) == "pong"


def test_task_runs_through_rabbitmq(settings: Settings, service_app: Flask) -> None:
    if not port_answers(5672):
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672")
    rabbit = settings.model_copy(
        update={"celery_broker_url": "amqp://guest:guest@127.0.0.1:5672//"}
    )
    app = create_celery(rabbit, service_app)
    # The broker is shared by every run on this machine: use a queue of our own.
    queue = f"test-ping-{uuid.uuid4().hex}"
    app.conf.task_routes = {"envcat.ping": {"queue": queue}}
    with start_worker(
        app, pool="solo", queues=[queue], perform_ping_check=False, shutdown_timeout=60
    ):
        assert _ping_round_trip(app, settings.redis_url) == "pong"
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(queue)  # type: ignore[attr-defined]  # kombu types it as StdChannel


def test_ping_task_is_registered_under_its_explicit_name() -> None:
    assert tasks.ping.name == "envcat.ping"
