"""Gunicorn settings for the api: `gunicorn -c envcat/api/gunicorn.conf.py envcat.api.wsgi:app`.

Long polls (`GET /requests/{id}/wait`, up to 30 s) must not pin one OS thread
each, so the workers are gevent: one process holds thousands of waiting CLIs as
greenlets, each waiting for a wake-up from the process's one Redis subscription.
See docs/api-deployment.md.
Command-line flags override anything here (e.g. `-b 0.0.0.0:5000 -w 4`).
"""

from __future__ import annotations

from typing import Any

from envcat.core import serving

bind = "127.0.0.1:5000"  # internal only: the bff is the public face
worker_class = "gevent"  # patches sockets before the app (redis, httpx) is imported
workers = 2  # processes; each one serves up to worker_connections clients
worker_connections = 5000  # concurrent requests per worker (greenlets)
# A gevent worker keeps heart-beating while greenlets wait, so this only catches a
# worker whose event loop is stuck, not a long poll.
timeout = 30
graceful_timeout = 40  # longer than the longest poll: a restart lets waiters finish
keepalive = 75  # the bff keeps connections to the api open between polls
accesslog = "-"
errorlog = "-"
proc_name = "envcat-api"

# Each waiting poll holds a client socket, and each short Redis command in flight a
# pooled connection, in its worker process.
_FILES_PER_CONNECTION = 2


def on_starting(server: Any) -> None:
    """Check the settings, share one metrics directory, raise the open-file limit.

    A bad setting stops here, in the master, with one line and exit code 3 (no
    worker is forked); workers inherit the metrics directory and the limit.
    """
    serving.load_or_halt(needs_kms_key=True)
    if (path := serving.private_metrics_dir()) is not None:
        server.log.info("prometheus multiprocess directory %s (removed on exit)", path)
    serving.raise_file_limit(server, _FILES_PER_CONNECTION)


def child_exit(server: Any, worker: Any) -> None:
    """Forget the live gauges of a worker that is gone."""
    serving.worker_gone(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the private metrics directory."""
    serving.remove_metrics_dir()
