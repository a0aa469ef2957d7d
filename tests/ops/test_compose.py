"""compose.yaml and the Dockerfile, checked without a Docker engine: every command runs a
real entry point of the package, the api stays internal, and the image runs as non-root."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import yaml
from celery import Celery

from envcat.core.settings import Settings
from envcat.ops.config import settings_environment
from tests.support import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ENVCAT_SERVICES = ("migrate", "api", "worker", "beat", "bff")
LONG_RUNNING_WITHOUT_HEALTHCHECK = {"beat"}  # no port to ask; a second beat would be the bug


def _argv(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _option(argv: list[str], name: str) -> str:
    for index, part in enumerate(argv):
        if part == name:
            return argv[index + 1]
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {argv}")


@pytest.fixture
def server_settings_in_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """wsgi modules and the celery app module build themselves from the environment."""
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)


def _import_target(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@pytest.mark.parametrize("service", ["api", "bff"])
def test_gunicorn_services_serve_a_real_wsgi_app(
    service: str, server_settings_in_env: None
) -> None:
    argv = _argv(service)
    assert argv[0] == "gunicorn"
    app = _import_target(argv[-1])
    assert callable(app)
    assert hasattr(app, "wsgi_app")


def _worker_class(argv: list[str]) -> str:
    if any(part.startswith("--worker-class") for part in argv):
        return _option(argv, "--worker-class")
    # The config file as installed in the image's venv, found in this checkout.
    installed = Path(_option(argv, "--config"))
    assert installed.parts[:3] == ("/", "opt", "envcat"), installed
    assert "python3.11" in installed.parts  # the Dockerfile's python:3.11 images
    in_package = Path(*installed.parts[installed.parts.index("site-packages") + 1 :])
    config = (ROOT / in_package).read_text()
    found = re.search(r'^worker_class = "(\w+)"', config, re.MULTILINE)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("service", ["api", "bff"])
def test_gunicorn_services_use_gevent_workers(service: str) -> None:
    # STYLE: a waiting CLI must not pin a sync worker.
    assert _worker_class(_argv(service)) == "gevent"


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_celery_services_load_the_real_celery_app(
    service: str, server_settings_in_env: None
) -> None:
    argv = _argv(service)
    assert argv[:3] == ["celery", "-A", "envcat.workers"]
    module = importlib.import_module("envcat.workers.celery")
    assert isinstance(module.app, Celery)
    assert argv[3] == ("worker" if service == "worker" else "beat")


def test_worker_consumes_every_queue_and_can_scale() -> None:
    from envcat.workers.factory import QUEUES

    argv = _argv("worker")
    assert _option(argv, "-Q").split(",") == list(QUEUES)
    worker = SERVICES["worker"]
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N works
    assert "gevent" not in " ".join(argv)  # STYLE: keep gevent out of the Celery worker


def _envcat_command(argv: list[str]) -> click.Command:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts
    main = _import_target(scripts[argv[0]])
    assert callable(main)
    from envcat.cli.main import cli

    command: click.Command = cli
    ctx = click.Context(cli, info_name=argv[0])
    for word in argv[1:]:
        if word.startswith("-"):
            break
        assert isinstance(command, click.Group), f"{word} under a command that is not a group"
        sub = command.get_command(ctx, word)
        assert sub is not None, f"no such command: {word}"
        command, ctx = sub, click.Context(sub, info_name=word, parent=ctx)
    return command


def test_migrations_run_a_real_envcat_command() -> None:
    command = _envcat_command(_argv("migrate"))
    assert command.name == "init-db"
    assert SERVICES["migrate"]["restart"] == "no"
    for service in ("api", "worker", "beat"):
        needs = SERVICES[service]["depends_on"]["migrate"]
        assert needs["condition"] == "service_completed_successfully"


def test_docs_service_serves_the_built_site() -> None:
    argv = _argv("docs")
    assert argv[:3] == ["python", "-m", "http.server"]
    assert importlib.util.find_spec("http.server") is not None
    assert argv[3] == "8889"
    assert SERVICES["docs"]["build"]["target"] == "docs"
    assert SERVICES["docs"]["ports"] == ["${DOCS_PORT:-8889}:8889"]


def test_api_publishes_no_port_to_the_host() -> None:
    api = SERVICES["api"]
    assert "ports" not in api
    assert api["expose"] == ["5000"]
    assert _option(_argv("api"), "--bind").endswith(":5000")
    for service in ("redis", "worker", "postgres"):
        assert "ports" not in SERVICES[service], service
    published = {name for name, spec in SERVICES.items() if "ports" in spec}
    assert published == {"bff", "docs", "tls"}
    assert SERVICES["bff"]["ports"] == ["${BFF_BIND:-0.0.0.0}:${BFF_PORT:-8888}:8888"]
    assert SERVICES["tls"]["profiles"] == ["tls"]


def test_long_running_services_have_healthchecks() -> None:
    for name, spec in SERVICES.items():
        if name == "migrate" or name in LONG_RUNNING_WITHOUT_HEALTHCHECK:
            continue
        assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for service, port in (("api", 5000), ("bff", 8888)):
        probe = " ".join(SERVICES[service]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in probe


def _redis_script() -> str:
    argv = _argv("redis")
    assert argv[:2] == ["sh", "-c"]
    return argv[2].replace("$$", "$")  # compose's escape for a literal $


def test_redis_keeps_nothing_on_disk() -> None:
    redis = SERVICES["redis"]
    assert redis["image"].startswith("redis:7")
    exec_line = next(line for line in _redis_script().splitlines() if line.startswith("exec "))
    argv = shlex.split(exec_line)[1:]
    assert _option(argv, "--save") == ""
    assert _option(argv, "--appendonly") == "no"
    assert "PASSWORD" not in exec_line  # passwords reach redis through a 0600 file only


def test_redis_users_limit_the_bff_to_its_own_keys(tmp_path: Path) -> None:
    """Run compose's redis command with a real redis-server and try each user."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    script = _redis_script().replace("/tmp/users.acl", str(tmp_path / "users.acl"))
    script = script.replace(
        "exec redis-server", f"exec {binary} --port {port} --bind 127.0.0.1 --dir {tmp_path}"
    )
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": "p" * 64, "REDIS_BFF_PASSWORD": "b" * 64}
    process = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        assert stat.S_IMODE((tmp_path / "users.acl").stat().st_mode) == 0o600
        with redis.Redis(port=port) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        url = f"redis://envcat:{'p' * 64}@127.0.0.1:{port}/0"
        with redis.Redis.from_url(url, decode_responses=True) as envcat:
            envcat.hset("req:abc", mapping={"status": "pending"})
            envcat.rpush("approvals", "message")
            assert envcat.publish("celeryev", "x") == 0
        bff_url = f"redis://bff:{'b' * 64}@127.0.0.1:{port}/0"
        with redis.Redis.from_url(bff_url, decode_responses=True) as bff:
            assert bff.ping()
            bff.set("bff:sess:1", "x", ex=60)
            assert bff.getdel("bff:sess:1") == "x"
            bff.hset("bff:throttle:a", "n", 1)
            assert bff.ttl("bff:throttle:a") == -1
            script_sha = bff.script_load("return redis.call('INCR', KEYS[1])")
            assert bff.evalsha(script_sha, 1, "bff:count") == 1
            pipe = bff.pipeline(transaction=True)
            pipe.sadd("bff:sess:user:u", "1").expire("bff:sess:user:u", 60).execute()
            refusals: tuple[Callable[[], object], ...] = (
                lambda: bff.hgetall("req:abc"),
                lambda: bff.rpush("approvals", "forged"),
                lambda: bff.set("nonce:x", "1"),
                lambda: bff.evalsha(script_sha, 1, "ratelimit/x"),
                lambda: bff.keys("*"),
                lambda: bff.flushall(),
                lambda: bff.config_get("*"),
                lambda: bff.publish("celeryev", "x"),
            )
            for refused in refusals:
                with pytest.raises(redis.exceptions.NoPermissionError):
                    refused()
    finally:
        process.terminate()
        process.wait(timeout=10)


SECRET_NAMES = ("BUNDLE_KMS_KEY", "BFF_SHARED_SECRET", "DELIVERY_SIGNING_KEY", "DATABASE_URL")
REDIS_USER_URL = (
    "redis://{user}:${{{variable}:?set {variable} in .env (docs/self-hosting.md)}}@redis:6379/0"
)


def test_secrets_come_from_an_env_file_not_from_compose() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for name in SECRET_NAMES:  # named in comments and grep patterns, never given a value
        assert not re.search(rf"{name}\s*[=:]\s*[\w/+-]{{8,}}", text), name
    server_files = [".envcat/secrets.env", ".envcat/server.env"]
    expected = {
        "migrate": server_files,
        "api": server_files,
        "beat": server_files,
        "worker": [*server_files, ".envcat/signing.env"],
        "bff": [".envcat/secrets.env"],
    }
    for service in ENVCAT_SERVICES:
        assert SERVICES[service]["env_file"] == expected[service], service
        environment = SERVICES[service]["environment"]
        user, variable = (
            ("bff", "REDIS_BFF_PASSWORD")
            if service == "bff"
            else (
                "envcat",
                "REDIS_PASSWORD",
            )
        )
        assert environment["REDIS_URL"] == REDIS_USER_URL.format(user=user, variable=variable)
        assert set(environment) <= {name.upper() for name in Settings.model_fields} | {
            "PROMETHEUS_MULTIPROC_DIR"
        }


def test_the_bff_gets_no_server_secret_and_no_data_volume() -> None:
    bff = SERVICES["bff"]
    assert bff["env_file"] == [".envcat/secrets.env"]
    assert bff["volumes"] == []
    for name in SECRET_NAMES:
        assert name not in bff["environment"]
    assert bff["environment"]["TRUSTED_PROXIES"] == "${TRUSTED_PROXIES:-0}"
    assert all(".envcat/server.env" in SERVICES[name]["env_file"] for name in ("api", "worker"))
    signing = [
        name for name in ENVCAT_SERVICES if ".envcat/signing.env" in SERVICES[name]["env_file"]
    ]
    assert signing == ["worker"]
    # Worker metrics leave the container (compose network only: nothing publishes 9808).
    assert SERVICES["worker"]["environment"]["WORKER_METRICS_HOST"] == "0.0.0.0"  # noqa: S104


def test_postgres_is_an_optional_profile() -> None:
    postgres = SERVICES["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert SERVICES["migrate"]["depends_on"]["postgres"]["required"] is False


def _stages(dockerfile: str) -> list[tuple[str, list[str]]]:
    stages: list[tuple[str, list[str]]] = []
    for line in dockerfile.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append((line, []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def test_dockerfile_final_stage_is_slim_and_runs_as_a_non_root_user() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    header, lines = stages[-1]
    assert re.fullmatch(r"FROM python:3\.11-slim AS runtime", header)
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    body = "\n".join(lines)
    assert "COPY --from=builder /opt/envcat /opt/envcat" in body
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in body, f"the final stage must not have {tool}"
    builder = next(lines for header, lines in stages if header.endswith("AS builder"))
    assert any("[server]" in line for line in builder)
    for header, lines in stages:  # every stage that serves something runs as non-root
        if any(line.startswith("CMD") for line in lines):
            assert any(line.startswith("USER envcat") for line in lines), header


def test_the_image_declares_no_volume_so_the_bff_gets_none() -> None:
    runtime = _stages((ROOT / "Dockerfile").read_text())[-1][1]
    assert not [line for line in runtime if line.upper().startswith("VOLUME")]
    for service in ("api", "worker", "beat", "migrate"):
        assert "envcat-data:/data" in SERVICES[service]["volumes"], service


def test_compose_builds_the_stages_the_dockerfile_has() -> None:
    names = {header.split()[-1] for header, _ in _stages((ROOT / "Dockerfile").read_text())}
    for name, spec in SERVICES.items():
        if "build" in spec:
            assert spec["build"]["target"] in names, name


def test_dockerignore_keeps_secrets_and_the_venv_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".envcat", ".venv", ".git", "*.db"):
        assert entry in ignored
