"""Start-up of the api and bff under gunicorn: config errors halt, metrics sum every worker.

- A bad or missing setting must stop the server, not crash-loop its workers
  (gunicorn re-forks a worker that exits 1, forever). `load_or_halt` prints the
  one-line error and exits with gunicorn's WORKER_BOOT_ERROR (3), on which the
  arbiter halts. The gunicorn.conf.py files call it in the master
  (`on_starting`), so no worker is forked at all; `wsgi.py` calls it too, for
  `gunicorn envcat.api.wsgi:app` without `-c`.
- prometheus_client counts per process: with several workers and no
  PROMETHEUS_MULTIPROC_DIR a scrape answers from whichever worker gets it.
  `private_metrics_dir` makes one directory for the server's lifetime in the
  master (the workers inherit the variable); `remove_metrics_dir` deletes it
  on exit.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from envcat.core.settings import ConfigError, Settings, load_settings

# gunicorn's Arbiter.WORKER_BOOT_ERROR: the arbiter stops instead of forking a new worker.
WORKER_BOOT_ERROR = 3
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_OWNED_VARIABLE = "ENVCAT_PRIVATE_METRICS_DIR"
_MARKER_FRESH_SECONDS = 60.0


def _in_gunicorn_worker() -> bool:
    """True while a gunicorn worker loads the app (not in the master, nor with --preload)."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "init_process" and f"gunicorn{os.sep}workers" in code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _is_first_report(line: str) -> bool:
    """Under `gunicorn -w N` every worker fails alike: let only the first one print."""
    marker = Path(tempfile.gettempdir()) / f"envcat-config-error-{os.getppid()}-{len(line)}"
    try:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - marker.stat().st_mtime > _MARKER_FRESH_SECONDS:
                marker.unlink()  # a stale marker of an earlier master with the same pid
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True


def load_or_halt(*, needs_kms_key: bool = True) -> Settings:
    """The settings from the environment, or one line on stderr and exit code 3."""
    try:
        return load_settings(needs_kms_key=needs_kms_key)
    except ConfigError as exc:
        line = str(exc.code)
        in_worker = _in_gunicorn_worker()
        # Under `-w N` a sibling may have reported it already and halts the arbiter; two
        # exits with code 3 at once make gunicorn's halt raise again (a traceback, exit 1).
        code = WORKER_BOOT_ERROR if not in_worker or _is_first_report(line) else 1
        if code == WORKER_BOOT_ERROR:
            print(line, file=sys.stderr, flush=True)
        if in_worker:
            # Nothing to clean up yet; a prompt exit lets the arbiter halt at once.
            os._exit(code)
        raise SystemExit(code) from None


def private_metrics_dir() -> Path | None:
    """Create and export a private PROMETHEUS_MULTIPROC_DIR unless the operator set one.

    Even one worker needs it: a restarted worker (max_requests, a crash, TTIN/TTOU)
    would otherwise start its counters from zero.
    """
    if os.environ.get(MULTIPROC_VARIABLE):
        return None
    path = Path(tempfile.mkdtemp(prefix="envcat-prometheus-"))
    os.environ[MULTIPROC_VARIABLE] = str(path)
    os.environ[_OWNED_VARIABLE] = str(path)
    return path


def remove_metrics_dir() -> None:
    """Delete the directory `private_metrics_dir` made (never one the operator set)."""
    owned = os.environ.pop(_OWNED_VARIABLE, None)
    if owned and os.environ.get(MULTIPROC_VARIABLE) == owned:
        shutil.rmtree(owned, ignore_errors=True)
        os.environ.pop(MULTIPROC_VARIABLE, None)


def worker_gone(pid: int) -> None:
    """Forget a dead worker's live gauges (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


_SPARE_FILES = 1024


def raise_file_limit(server: Any, files_per_connection: int) -> None:
    """Raise the master's open-file limit (workers inherit it) for worker_connections clients."""
    needed = files_per_connection * server.cfg.worker_connections + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        server.log.warning(
            "open-file limit %s is below the %s that %s connections per worker need",
            wanted,
            needed,
            server.cfg.worker_connections,
        )
