"""Gunicorn settings for the bff: `gunicorn -c envcat/bff/gunicorn.conf.py envcat.bff.wsgi:app`.

gevent workers, so a CLI's long poll through the proxy holds a greenlet, not a
worker. The master checks the settings before forking (a bad secret stops the
server with one line and exit code 3) and gives the workers one private
Prometheus multiprocess directory unless PROMETHEUS_MULTIPROC_DIR is set.
Command-line flags override anything here (e.g. `-b 0.0.0.0:8888 -w 4`).
"""

from __future__ import annotations

from typing import Any

from envcat.core import serving

bind = "127.0.0.1:8888"  # put the TLS proxy in front, or bind 0.0.0.0 (docs/self-hosting.md)
worker_class = "gevent"  # patches sockets before the app (redis, httpx) is imported
workers = 2
worker_connections = 2000  # each waiting CLI holds one greenlet and one api connection
# A poll through the proxy holds the CLI's socket and a connection to the api.
_FILES_PER_CONNECTION = 2
timeout = 30
graceful_timeout = 40  # longer than the longest poll: a restart lets waiters finish
keepalive = 75  # longer than any client's idle expiry (httpx: 5 s), or reuse races the close
accesslog = "-"
errorlog = "-"
proc_name = "envcat-bff"


def on_starting(server: Any) -> None:
    """Check the settings (the bff never needs BUNDLE_KMS_KEY), share one metrics directory,
    raise the open-file limit (under a 1,024 default a worker fails at ~500 waiting CLIs)."""
    serving.load_or_halt(needs_kms_key=False)
    if (path := serving.private_metrics_dir()) is not None:
        server.log.info("prometheus multiprocess directory %s (removed on exit)", path)
    serving.raise_file_limit(server, _FILES_PER_CONNECTION)


def child_exit(server: Any, worker: Any) -> None:
    """Forget the live gauges of a worker that is gone."""
    serving.worker_gone(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the private metrics directory."""
    serving.remove_metrics_dir()
