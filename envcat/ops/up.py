"""`envcat server up`: the whole system on one machine without Docker (DESIGN §1).

SQLite and the generated secrets live in the data directory, a private
`redis-server` is started when REDIS_URL is unset, and the api, a worker, beat
and the bff run as supervised children until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import envcat
from envcat.core.settings import Settings
from envcat.ops import signing
from envcat.ops.config import (
    DATABASE_FILE,
    DEFAULT_DATA_DIR,
    REDIS_PASSWORD,
    SECRETS_FILE,
    OpsError,
    ensure_data_dir,
    ensure_private_file,
    ensure_secrets,
    load_server_settings,
    read_secrets,
    settings_environment,
    sqlite_url,
    write_private_file,
)
from envcat.ops.supervisor import Output, ProcessSpec, Supervisor

if TYPE_CHECKING:
    import httpx

    from envcat.ops import demo

# The heavy modules (SQLAlchemy and Alembic, Celery, Flask, httpx) are imported where
# they are used, after the settings are checked: a bad secret stops `up` in a second.

READY_TIMEOUT_SECONDS = 90.0
REDIS_START_SECONDS = 10.0
POLL_SECONDS = 0.25
# The api's and the bff's own gunicorn settings (gevent workers for long polls, file
# limits, settings checked in the master so a bad one stops the server).
API_GUNICORN_CONFIG = Path(envcat.__file__).parent / "api" / "gunicorn.conf.py"
BFF_GUNICORN_CONFIG = Path(envcat.__file__).parent / "bff" / "gunicorn.conf.py"
REDIS_CONFIG_FILE = "redis.conf"
WORKER_CONCURRENCY = "2"
REDIS_MISSING = (
    "envcat: redis-server not found: apt-get install redis-server (Debian/Ubuntu) "
    "or brew install redis (or set REDIS_URL to a Redis you run)"
)
KMS_VARIABLE = "BUNDLE_KMS_KEY"
SIGNING_VARIABLE = signing.SIGNING_VARIABLE
# What the internet-facing bff never holds: the keyring of the values at rest, the
# delivery signing key and the database URL (with its password).
NOT_FOR_THE_BFF = frozenset({KMS_VARIABLE, SIGNING_VARIABLE, "DATABASE_URL"})
# Only the workers sign deliveries. The api sits behind no proxy: the bff's proof, not
# X-Forwarded-For, tells it the client address (TRUSTED_PROXIES is for the bff).
NOT_FOR_THE_API = frozenset({SIGNING_VARIABLE, "TRUSTED_PROXIES"})
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_Handler = Callable[[int, FrameType | None], object] | int | None


@dataclass(frozen=True)
class UpOptions:
    """The command-line options of `envcat server up`."""

    host: str
    api_port: int
    bff_port: int
    data_dir: Path
    demo: bool


def cli_command() -> str:
    """`envcat` when that name runs this install, else the path of this install's script."""
    here = Path(sys.executable).parent / "envcat"
    found = shutil.which("envcat")
    if found is not None and Path(found).resolve() == here.resolve():
        return "envcat"
    return shlex.quote(str(here)) if here.exists() else "envcat"


def browser_host(host: str) -> str:
    """The host name to put in URLs a person opens (a wildcard bind is not one)."""
    return "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "") else host  # noqa: S104


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int, option: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise OpsError(
                f"envcat: {host}:{port} is in use; choose another with {option}"
            ) from None


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def _trap_signals(stopping: threading.Event) -> dict[int, _Handler]:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    return {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS}


def _restore_signals(previous: Mapping[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _fixed_settings(options: UpOptions) -> dict[str, object]:
    """What `up` decides whatever the environment says (it starts the api itself)."""
    fixed: dict[str, object] = {"api_base_url": f"http://127.0.0.1:{options.api_port}"}
    if "PUBLIC_URL" not in os.environ:
        fixed["public_url"] = f"http://{browser_host(options.host)}:{options.bff_port}"
    return fixed


def _metrics_dir(data_dir: Path, name: str) -> str:
    """A fresh prometheus_client multiprocess directory for one pre-forking process."""
    path = data_dir / "prometheus" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def _without(env: Mapping[str, str], names: frozenset[str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name.upper() not in names}


def _public_keys(settings: Settings) -> dict[str, str]:
    # The api serves the public halves (GET /api/v1/server-key); the seeds stay with the workers.
    if settings.delivery_signing_key is None or settings.delivery_public_keys:
        return {}
    seeds = settings.delivery_signing_key.get_secret_value()
    return {"DELIVERY_PUBLIC_KEYS": signing.public_keys_setting(seeds)}


def redis_config(port: int, data_dir: Path, password: str) -> str:
    """The private redis-server's configuration: loopback, no persistence, a password."""
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        'save ""',
        "appendonly no",
        f'dir "{data_dir}"',
        "loglevel warning",
        # Keeps a pending request's hash (with its CLI context) in the compact encoding:
        # about 0.95 KB per request instead of 1.6 KB (docs/reliability.md).
        "hash-max-listpack-value 512",
        f"requirepass {password}",
    ]
    return "\n".join(lines) + "\n"


def app_specs(options: UpOptions, data_dir: Path, settings: Settings) -> list[ProcessSpec]:
    """The api, worker, beat and bff children, each with the environment built from settings."""
    env = {**os.environ, **settings_environment(settings), "PYTHONUNBUFFERED": "1"}
    python, level = sys.executable, settings.log_level
    # Quick stops for a dev loop (a waiting CLI retries), and no control socket: two
    # gunicorn masters would share its default path.
    gunicorn = [python, "-m", "gunicorn", "--graceful-timeout", "5", "--no-control-socket"]
    api = [*gunicorn, "--config", str(API_GUNICORN_CONFIG)]
    bff = [*gunicorn, "--config", str(BFF_GUNICORN_CONFIG)]
    celery = [python, "-m", "celery", "-A", "envcat.workers"]
    from envcat.workers.factory import QUEUES

    worker = [*celery, "worker", "-Q", ",".join(QUEUES), "--concurrency", WORKER_CONCURRENCY]
    beat = [*celery, "beat", "--schedule", str(data_dir / "celerybeat-schedule")]
    return [
        ProcessSpec(
            "api",
            [*api, "--bind", f"127.0.0.1:{options.api_port}", "envcat.api.wsgi:app"],
            {
                **_without(env, NOT_FOR_THE_API),
                **_public_keys(settings),
                "PROMETHEUS_MULTIPROC_DIR": _metrics_dir(data_dir, "api"),
            },
        ),
        ProcessSpec(
            "worker",
            [*worker, "--loglevel", level],
            {**env, "PROMETHEUS_MULTIPROC_DIR": _metrics_dir(data_dir, "worker")},
        ),
        ProcessSpec("beat", [*beat, "--loglevel", level], _without(env, NOT_FOR_THE_API)),
        ProcessSpec(
            "bff",
            [*bff, "--bind", f"{options.host}:{options.bff_port}", "envcat.bff.wsgi:app"],
            {
                **_without(env, NOT_FOR_THE_BFF),
                "PROMETHEUS_MULTIPROC_DIR": _metrics_dir(data_dir, "bff"),
            },
        ),
    ]


@dataclass
class Up:
    """One run of `envcat server up`."""

    options: UpOptions
    data_dir: Path
    settings: Settings
    output: Output
    supervisor: Supervisor
    stopping: threading.Event

    def say(self, text: str) -> None:
        self.output.line("envcat", text)

    def start_private_redis(self) -> None:
        """Start a non-persistent, password-protected redis-server child on a free port.

        The password (REDIS_PASSWORD in secrets.env) goes in a mode-0600 config file,
        never on the command line, which every local user can read.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise OpsError(REDIS_MISSING)
        port = free_port()
        password = read_secrets(self.data_dir / SECRETS_FILE)[REDIS_PASSWORD]
        config = self.data_dir / REDIS_CONFIG_FILE
        write_private_file(config, redis_config(port, self.data_dir, password))
        argv = [binary, str(config)]
        self.supervisor.start(ProcessSpec("redis", argv, dict(os.environ), is_backing=True))
        deadline = time.monotonic() + REDIS_START_SECONDS
        while not _port_answers(port):
            self._raise_if_a_child_died()
            if time.monotonic() > deadline:
                raise OpsError(f"envcat: redis-server did not answer on port {port}")
            time.sleep(0.05)
        self.settings = load_server_settings(
            self.data_dir,
            **_fixed_settings(self.options),
            redis_url=f"redis://:{password}@127.0.0.1:{port}/0",
        )

    def _raise_if_a_child_died(self) -> None:
        dead = self.supervisor.first_exited()
        if dead is not None:
            code = dead.process.returncode
            self.say(f"{dead.spec.name} exited with code {code}; stopping everything")
            raise OpsError(f"envcat: {dead.spec.name} exited with code {code}; stopped everything")

    def wait_until_ready(self) -> bool:
        """Poll /readyz of the api and the bff; False when a stop was asked for meanwhile."""
        pending = {
            "api": f"http://127.0.0.1:{self.options.api_port}/readyz",
            "bff": f"http://127.0.0.1:{self.options.bff_port}/readyz",
        }
        if self.options.host not in ("0.0.0.0", "127.0.0.1"):  # noqa: S104
            pending["bff"] = f"http://{self.options.host}:{self.options.bff_port}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        import httpx

        with httpx.Client(timeout=2.0) as client:
            while pending:
                self._raise_if_a_child_died()
                for name, url in list(pending.items()):
                    if _is_ready(client, url):
                        del pending[name]
                        self.say(f"{name} is ready")
                if not pending:
                    break
                if time.monotonic() > deadline:
                    names = " and ".join(pending)
                    raise OpsError(f"envcat: {names} not ready after {READY_TIMEOUT_SECONDS:.0f} s")
                if self.stopping.wait(POLL_SECONDS):
                    return False
        return not self.stopping.is_set()

    def watch(self) -> int:
        """Wait for Ctrl-C/SIGTERM (exit 0) or a child that dies (exit 1)."""
        while not self.stopping.wait(POLL_SECONDS):
            self._raise_if_a_child_died()
        self.say("stopping every process")
        return 0

    def print_banner(self, account: demo.DemoAccount | None) -> None:
        """Where to go next: the URL, the first account, the demo."""
        from envcat.ops import demo

        public_url = self.settings.public_url.rstrip("/")
        server = f"http://{browser_host(self.options.host)}:{self.options.bff_port}"
        data_dir = self.options.data_dir
        extra = "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"
        self.say(f"Open {public_url} in a browser.")
        self.say(f"First account: sign up at {public_url}/sign-up, or run")
        self.say(f"    envcat server create-user --email you@example.com --password-stdin{extra}")
        if account is not None:
            self.say(f"Demo account: {account.email}  password: {account.password}")
            # The exact command, runnable as printed: this very install's envcat, by path
            # unless it is the one on PATH (issue #15: `envcat: command not found`).
            command = f"{cli_command()} get {demo.DEMO_BUNDLE} -w {account.workspace}"
            self.say(f"Try it: {command} --server {server}")
        self.say(f"Worker metrics: http://127.0.0.1:{self.settings.worker_metrics_port}/metrics")
        self.say("EnvCat is ready. Press Ctrl-C to stop everything.")

    def run(self) -> int:
        """Start everything in order, then supervise."""
        from sqlalchemy.engine import make_url

        from envcat.ops import demo
        from envcat.ops.maintenance import init_database

        if "redis_url" not in self.settings.model_fields_set:
            self.start_private_redis()
        if self.settings.database_url == sqlite_url(self.data_dir):
            # Private from its creation, and again if an older run left it 0644.
            ensure_private_file(self.data_dir / DATABASE_FILE)
        init_database(self.settings)
        url = make_url(self.settings.database_url).render_as_string(hide_password=True)
        self.say(f"database is migrated: {url}")
        for spec in app_specs(self.options, self.data_dir, self.settings):
            self.supervisor.start(spec)
        if not self.wait_until_ready():
            return 0
        account = None
        if self.options.demo:
            secret = self.settings.bff_shared_secret.get_secret_value()
            account = demo.ensure_demo(self.settings.api_base_url, secret, self.data_dir)
        self.print_banner(account)
        return self.watch()


def _is_ready(client: httpx.Client, url: str) -> bool:
    import httpx

    try:
        return client.get(url).status_code == httpx.codes.OK
    except httpx.HTTPError:
        return False


def run_up(options: UpOptions) -> int:
    """Run `envcat server up` until it is stopped; return the process exit code."""
    _check_port_free("127.0.0.1", options.api_port, "--api-port")
    _check_port_free(options.host, options.bff_port, "--bff-port")
    data_dir = ensure_data_dir(options.data_dir)
    ensure_secrets(data_dir)
    settings = load_server_settings(data_dir, **_fixed_settings(options))
    output = Output()
    up = Up(options, data_dir, settings, output, Supervisor(output), threading.Event())
    previous = _trap_signals(up.stopping)
    try:
        return up.run()
    finally:
        up.supervisor.stop_all()
        _restore_signals(previous)
        up.say("stopped")
