"""Worker observability (DESIGN §10): JSON logs, the request id carried api → task, metrics.

`install()` (called by the Celery factory) connects the signal receivers:

- `setup_logging` / `beat_init`: the worker and beat log JSON lines like the api.
- `before_task_publish` puts the current request id (`request_id_var`) into the
  message headers; `task_prerun` binds it while the task runs, `task_postrun`
  clears it, so every log line of a task names the api call that enqueued it.
- `task_prerun`/`task_postrun`/`task_failure` feed `envcat_task_duration_seconds`
  and `envcat_task_failures_total`.
- `celeryd_init` (sent only by `celery worker`, in its main process) serves
  /metrics on WORKER_METRICS_HOST:WORKER_METRICS_PORT (127.0.0.1 unless set) and
  samples `envcat_queue_depth`. With the prefork pool set PROMETHEUS_MULTIPROC_DIR
  (an empty directory) so the main process reports what the pool processes measured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextvars import Token
from typing import Any

from celery import Celery, Task, current_app, signals
from kombu import Connection
from prometheus_client import multiprocess, start_http_server

from envcat.core import exposition
from envcat.core.logging import configure_logging, request_id_var
from envcat.core.settings import Settings
from envcat.core.wire import clean_request_id
from envcat.services import metrics

# The Celery message header that carries the request id (JSON-serialisable, never a
# secret); the HTTP one is `core.wire.REQUEST_ID_HEADER`.
REQUEST_ID_HEADER = "envcat_request_id"
QUEUE_DEPTH_SECONDS = 15.0
_LOG_LEVEL = "envcat_log_level"
_METRICS_PORT = "envcat_worker_metrics_port"
_METRICS_HOST = "envcat_worker_metrics_host"
_UID = "envcat.observability."

log = logging.getLogger("envcat.worker")
# task id → (start time, token restoring the previous request id)
_running: dict[str, tuple[float, Token[str | None]]] = {}


def install(celery: Celery, settings: Settings) -> None:
    """Wire logs, request-id propagation and metrics into the worker's signals (idempotent)."""
    celery.conf.update(
        {
            _LOG_LEVEL: settings.log_level,
            _METRICS_PORT: settings.worker_metrics_port,
            _METRICS_HOST: settings.worker_metrics_host,
        }
    )
    receivers = (
        (signals.setup_logging, _configure_worker_logging),
        (signals.beat_init, _configure_beat_logging),
        (signals.before_task_publish, _attach_request_id),
        (signals.task_prerun, _task_started),
        (signals.task_postrun, _task_finished),
        (signals.task_failure, _task_failed),
        (signals.celeryd_init, _serve_metrics),
        (signals.worker_process_shutdown, _pool_process_exited),
    )
    for signal, receiver in receivers:
        signal.connect(receiver, weak=False, dispatch_uid=_UID + receiver.__name__)


def _configure_worker_logging(**_: Any) -> None:
    configure_logging("worker", current_app.conf.get(_LOG_LEVEL) or "INFO")


def _configure_beat_logging(sender: Any = None, **_: Any) -> None:
    configure_logging("beat", current_app.conf.get(_LOG_LEVEL) or "INFO")


def _attach_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = request_id_var.get()
    if request_id is not None and headers is not None:
        headers[REQUEST_ID_HEADER] = request_id


def _task_started(task_id: str, task: Task[Any, Any], **_: Any) -> None:
    # Always set, even to None: a pool thread must not keep the previous task's id.
    request_id = clean_request_id(getattr(task.request, REQUEST_ID_HEADER, None))
    _running[task_id] = (time.perf_counter(), request_id_var.set(request_id))


def _task_finished(task_id: str, task: Task[Any, Any], **_: Any) -> None:
    started = _running.pop(task_id, None)
    if started is None:
        return
    began, token = started
    metrics.TASK_DURATION.labels(task=task.name).observe(time.perf_counter() - began)
    try:
        request_id_var.reset(token)
    except ValueError:  # set in another context (a pool that switched threads)
        request_id_var.set(None)


def _task_failed(sender: Task[Any, Any] | None = None, **_: Any) -> None:
    if sender is not None:
        metrics.TASK_FAILURES.labels(task=sender.name).inc()


def _serve_metrics(sender: Any = None, instance: Any = None, **_: Any) -> None:
    app: Celery = instance.app
    port = int(app.conf.get(_METRICS_PORT) or 0)
    # Loopback unless WORKER_METRICS_HOST opens it: the endpoint has no authentication.
    host = str(app.conf.get(_METRICS_HOST) or "127.0.0.1")
    try:
        start_http_server(port, addr=host, registry=exposition.registry())
    except OSError as exc:
        # Metrics are not worth refusing work for (e.g. two workers on one host).
        log.warning("worker metrics not served", extra={"port": port, "error": exc.strerror})
        return
    log.info("worker metrics served", extra={"port": port, "host": host})
    threading.Thread(
        target=_sample_queue_depth, args=(app,), name="envcat-queue-depth", daemon=True
    ).start()


def routed_queues(app: Celery) -> list[str]:
    """The queues the task routes name (the factory's routing is the one list)."""
    routes = app.conf.task_routes or {}
    return sorted({route["queue"] for route in routes.values()} or {app.conf.task_default_queue})


def queue_depth(connection: Connection, queue: str) -> int:
    """Messages waiting in `queue` (0 when the broker has not created it yet)."""
    with connection.channel() as channel:
        try:
            declared = channel.queue_declare(queue=queue, passive=True)  # type: ignore[attr-defined]  # missing from kombu-stubs' StdChannel
            return int(declared.message_count)
        except connection.channel_errors:
            return 0


def record_queue_depth(app: Celery) -> None:
    """Set `envcat_queue_depth` for every routed queue, over a short-lived connection."""
    # Short-lived: a pool process forked meanwhile inherits no open broker socket.
    with app.connection_for_read() as connection:
        unreachable: tuple[type[BaseException], ...] = (*connection.connection_errors, OSError)
        try:
            for queue in routed_queues(app):
                metrics.QUEUE_DEPTH.labels(queue=queue).set(queue_depth(connection, queue))
        except unreachable as exc:
            log.warning("queue depth not sampled", extra={"error_type": type(exc).__name__})


def _sample_queue_depth(app: Celery) -> None:
    while True:
        record_queue_depth(app)
        time.sleep(QUEUE_DEPTH_SECONDS)


def _pool_process_exited(**_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
