"""compose.yaml and the Dockerfile, checked without a Docker engine: every command runs a
real entry point of the package, the api stays internal, and the image runs as non-root."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from celery import Celery

from envcat.core.settings import Settings
from envcat.ops.config import settings_environment

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
    assert published == {"bff", "docs"}
    assert SERVICES["bff"]["ports"] == ["${BFF_PORT:-8888}:8888"]


def test_long_running_services_have_healthchecks() -> None:
    for name, spec in SERVICES.items():
        if name == "migrate" or name in LONG_RUNNING_WITHOUT_HEALTHCHECK:
            continue
        assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for service, port in (("api", 5000), ("bff", 8888)):
        probe = " ".join(SERVICES[service]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in probe


def test_redis_keeps_nothing_on_disk() -> None:
    redis = SERVICES["redis"]
    assert redis["image"].startswith("redis:7")
    argv = _argv("redis")
    assert _option(argv, "--save") == ""
    assert _option(argv, "--appendonly") == "no"


def test_secrets_come_from_an_env_file_not_from_compose() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for name in ("BUNDLE_KMS_KEY=", "BFF_SHARED_SECRET=", "BUNDLE_KMS_KEY:", "BFF_SHARED_SECRET:"):
        assert name not in text
    for service in ENVCAT_SERVICES:
        keyring = [] if service == "bff" else [".envcat/kms.env"]
        assert SERVICES[service]["env_file"] == [".envcat/secrets.env", *keyring], service
        environment = SERVICES[service]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert set(environment) <= {name.upper() for name in Settings.model_fields} | {
            "PROMETHEUS_MULTIPROC_DIR"
        }


def test_the_bff_is_never_given_the_keyring() -> None:
    bff = SERVICES["bff"]
    assert all("kms" not in entry for entry in bff["env_file"])
    assert "BUNDLE_KMS_KEY" not in bff["environment"]
    assert all(".envcat/kms.env" in SERVICES[name]["env_file"] for name in ("api", "worker"))


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


def test_compose_builds_the_stages_the_dockerfile_has() -> None:
    names = {header.split()[-1] for header, _ in _stages((ROOT / "Dockerfile").read_text())}
    for name, spec in SERVICES.items():
        if "build" in spec:
            assert spec["build"]["target"] in names, name


def test_dockerignore_keeps_secrets_and_the_venv_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".envcat", ".venv", ".git", "*.db"):
        assert entry in ignored
