"""Real gunicorn and Celery processes: a bad setting stops them, metrics survive many workers.

Issue #12, findings 6-8: every documented way to start the api or the bff
exits non-zero within seconds with one clear line (no crash loop, no
traceback); `/metrics` needs METRICS_TOKEN; under `gunicorn -w 2` the counters
are the sum of every worker and never go backwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import envcat
from envcat.core.keys import new_kms_key, new_shared_secret
from tests.support import free_port, wait_for_port
from tests.support.cli_env import clean_environment

pytestmark = pytest.mark.slow

PACKAGE = Path(envcat.__file__).parent
API_CONF = str(PACKAGE / "api" / "gunicorn.conf.py")
BFF_CONF = str(PACKAGE / "bff" / "gunicorn.conf.py")
GUNICORN = [sys.executable, "-m", "gunicorn", "--no-control-socket", "--graceful-timeout", "2"]
CELERY = [sys.executable, "-m", "celery", "-A", "envcat.workers"]
# A bad setting stops the process at start-up: one that kept running, restarting its
# workers or retrying would run into `_run`'s 60 s timeout. The bound leaves room for a
# start-up's imports on a busy machine (12 s was seen with six test processes on 2 cores).
STOP_WITHIN_SECONDS = 25.0
TOKEN = "scrape-token-1234"
SHORT = "BFF_SHARED_SECRET: must be at least 64 hex characters"

STARTS = [
    pytest.param("envcat.api.wsgi:app", [], id="api"),
    pytest.param("envcat.api.wsgi:app", ["-w", "2"], id="api-w2"),
    pytest.param("envcat.api.wsgi:app", ["-c", API_CONF], id="api-conf"),
    pytest.param(
        "envcat.api.wsgi:app", ["-c", API_CONF, "-w", "2", "-k", "sync"], id="api-conf-w2"
    ),
    pytest.param("envcat.bff.wsgi:app", ["-w", "2"], id="bff-w2"),
    pytest.param("envcat.bff.wsgi:app", ["-c", BFF_CONF], id="bff-conf"),
]


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "configuration error" in line]
    assert errors == [f"envcat: configuration error: {expected}"], output


def _run(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, check=False, cwd="/"
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize(("app", "options"), STARTS)
def test_a_bad_secret_stops_gunicorn_with_one_line(app: str, options: list[str]) -> None:
    env = clean_environment(BFF_SHARED_SECRET="too-short", BUNDLE_KMS_KEY=new_kms_key())
    argv = [*GUNICORN, *options, "--bind", f"127.0.0.1:{free_port()}", app]
    result, seconds = _run(argv, env)
    _assert_one_clear_line(result, SHORT)
    assert result.returncode == 3  # gunicorn's boot error: the arbiter halted
    assert seconds < STOP_WITHIN_SECONDS


@pytest.mark.parametrize("options", [[], ["-c", API_CONF, "-w", "2"]], ids=["bare", "conf"])
def test_a_missing_keyring_stops_the_api(options: list[str]) -> None:
    env = clean_environment(BFF_SHARED_SECRET=new_shared_secret())
    argv = [*GUNICORN, *options, "--bind", f"127.0.0.1:{free_port()}", "envcat.api.wsgi:app"]
    result, seconds = _run(argv, env)
    _assert_one_clear_line(result, "BUNDLE_KMS_KEY: Field required")
    assert seconds < STOP_WITHIN_SECONDS


@pytest.mark.parametrize(
    "command", [["worker", "--pool", "solo"], ["beat"]], ids=["worker", "beat"]
)
def test_a_bad_secret_stops_celery_with_one_line(command: list[str], tmp_path: Path) -> None:
    env = clean_environment(BFF_SHARED_SECRET="too-short", BUNDLE_KMS_KEY=new_kms_key())
    result, seconds = _run([*CELERY, *command], env)
    _assert_one_clear_line(result, SHORT)
    assert seconds < STOP_WITHIN_SECONDS


def test_a_worker_without_the_signing_key_stops_with_one_line() -> None:
    env = clean_environment(BFF_SHARED_SECRET=new_shared_secret(), BUNDLE_KMS_KEY=new_kms_key())
    result, seconds = _run([*CELERY, "worker", "--pool", "solo"], env)
    _assert_one_clear_line(result, "DELIVERY_SIGNING_KEY: Field required")
    assert seconds < STOP_WITHIN_SECONDS


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found.extend(int(child) for child in text.split())
    return found


def _wait_for_workers(url: str) -> None:
    """Until a worker answers (not /healthz: the tests count those)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/readyz", timeout=30)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def _bff(redis_url: str, log: Path, **extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with _serve("bff", redis_url, log, **extra) as served:
        yield served


@contextlib.contextmanager
def _serve(
    app: str, redis_url: str, log: Path, **extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`gunicorn -c <app's conf> -w 2` on a free port, until the block ends (then SIGTERM)."""
    port = free_port()
    env = clean_environment(
        BFF_SHARED_SECRET=new_shared_secret(),
        BUNDLE_KMS_KEY=new_kms_key(),
        DATABASE_URL=f"sqlite:///{log.parent / 'envcat.db'}",
        REDIS_URL=redis_url,
        API_BASE_URL=f"http://127.0.0.1:{free_port()}",
        **extra,
    )
    conf = API_CONF if app == "api" else BFF_CONF
    argv = [*GUNICORN, "-c", conf, "-w", "2", "--bind", f"127.0.0.1:{port}"]
    with log.open("wb") as sink:
        process = subprocess.Popen([*argv, f"envcat.{app}.wsgi:app"], env=env, stderr=sink, cwd="/")
        try:
            wait_for_port(port, timeout=60)
            url = f"http://127.0.0.1:{port}"
            _wait_for_workers(url)
            yield url, process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _healthz_count(url: str) -> float:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = httpx.get(f"{url}/metrics", headers=auth, timeout=30)
    assert reply.status_code == 200, reply.text
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if (
                sample.name == "envcat_bff_http_requests_total"
                and sample.labels.get("endpoint") == "health.healthz"
            ):
                return float(sample.value)
    return 0.0


def test_metrics_sum_every_worker_and_never_go_back(redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "bff.log"
    with _bff(redis_url, log, METRICS_TOKEN=TOKEN) as (url, master):
        served, seen = 0, list[float]()
        for _ in range(4):
            for _ in range(10):
                with httpx.Client() as fresh:  # a new connection: any worker may take it
                    assert fresh.get(f"{url}/healthz", timeout=30).status_code == 200
                served += 1
            seen.extend(_healthz_count(url) for _ in range(4))
            assert seen[-1] == served
        # A worker that dies keeps its counts: the new one adds to them.
        os.kill(_children(master.pid)[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(_children(master.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        seen.extend(_healthz_count(url) for _ in range(6))
        assert seen == sorted(seen)
        assert seen[-1] == served
    text = log.read_text()
    found = re.search(r"prometheus multiprocess directory (\S+)", text)
    assert found is not None, text
    assert not Path(found.group(1)).exists()  # removed when the server stopped


def test_metrics_need_the_token(redis_url: str, tmp_path: Path) -> None:
    with _bff(redis_url, tmp_path / "bff.log", METRICS_TOKEN=TOKEN) as (url, _):
        assert httpx.get(f"{url}/metrics").status_code == 401
        wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert "envcat_bff" not in wrong.text
    with _bff(redis_url, tmp_path / "bff2.log") as (url, _):
        unset = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert unset.status_code == 404


def test_the_api_under_its_conf_serves_multiprocess_metrics(redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with _serve("api", redis_url, log, METRICS_TOKEN=TOKEN) as (url, _):
        for _ in range(4):
            reply = httpx.get(f"{url}/metrics", headers=auth, timeout=30)
            assert reply.status_code == 200
            # Only the multiprocess collector answers: no per-process Python collectors.
            assert "python_gc_objects_collected_total" not in reply.text
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
    found = re.search(r"prometheus multiprocess directory (\S+)", log.read_text())
    assert found is not None
    assert not Path(found.group(1)).exists()
