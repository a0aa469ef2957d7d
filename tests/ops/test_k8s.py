"""deploy/k8s (issue #21), checked without a cluster: every command runs a real entry point,
probes hit the real health routes, every variable is a setting, Secrets are referenced and
never inlined, each one reaches only the pods that need it, and every pod runs non-root on a
read-only root filesystem."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from flask import Flask

from envcat.core.settings import Settings
from envcat.ops.commands import server
from envcat.workers.factory import QUEUES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OPTIONAL = {"hpa-queue-depth.yaml"}
SITE_PACKAGES = "/opt/envcat/lib/python3.11/site-packages/"
# Not settings, but read by a library the processes use.
LIBRARY_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR"}
SETTINGS = {name.upper() for name in Settings.model_fields}
# Which pods may hold which Secret (mirrors compose.yaml's env files).
SECRET_HOLDERS = {
    "envcat-common": {"migrate", "api", "bff", "worker", "beat", "backup"},
    "envcat-server": {"migrate", "api", "worker", "beat"},
    "envcat-signing": {"worker"},
    "envcat-bff": {"bff"},
    "envcat-backup": {"backup"},
}
HEALTH_PATHS = {"/healthz", "/readyz"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _all() -> list[dict[str, Any]]:
    """Every Kubernetes object (the kustomization itself excluded)."""
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _documents(path)
    ]


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(component, pod spec) of every workload."""
    specs = []
    for doc in _all():
        kind = doc["kind"]
        if kind in {"Deployment", "Job"}:
            template = doc["spec"]["template"]
        elif kind == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        specs.append((template["metadata"]["labels"]["app.kubernetes.io/component"], template))
    return [(component, template["spec"]) for component, template in specs]


def _containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(c, spec, container) for c, spec in _pod_specs() for container in spec["containers"]]


def _option(argv: list[str], name: str) -> str:
    for index, part in enumerate(argv):
        if part == name:
            return argv[index + 1]
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {argv}")


def test_every_file_parses_and_the_kustomization_lists_them() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - OPTIONAL
    for doc in _all():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"]["name"].startswith("envcat")


def test_there_is_a_workload_for_each_process_and_each_queue() -> None:
    components = [component for component, _ in _pod_specs()]
    assert sorted(set(components)) == ["api", "backup", "beat", "bff", "migrate", "worker"]
    queues = [
        _option(container["command"], "-Q")
        for component, _, container in _containers()
        if component == "worker"
    ]
    assert sorted(queues) == sorted(QUEUES)  # one Deployment per queue, one queue each


def _check_gunicorn(argv: list[str]) -> int:
    config = _option(argv, "--config")
    assert config.startswith(SITE_PACKAGES)
    assert (ROOT / config.removeprefix(SITE_PACKAGES)).is_file(), config
    module, _, attribute = argv[-1].partition(":")
    assert attribute == "app" and importlib.util.find_spec(module) is not None, argv[-1]
    return int(_option(argv, "--bind").rsplit(":", 1)[1])


def _check_celery(argv: list[str]) -> None:
    assert argv[1:3] == ["-A", "envcat.workers"]
    assert importlib.util.find_spec("envcat.workers.celery") is not None
    assert argv[3] in {"worker", "beat"}
    if argv[3] == "worker":
        assert _option(argv, "-Q") in QUEUES


def _check_envcat(argv: list[str]) -> None:
    assert argv[1] == "server"
    command = server.get_command(click.Context(server), argv[2])
    assert command is not None, f"no command envcat server {argv[2]}"
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for part in argv[3:]:
        if part.startswith("--"):
            assert part.split("=", 1)[0] in known, f"{part} is not an option of {argv[2]}"


def test_every_command_is_a_real_entry_point() -> None:
    seen = set()
    for component, _, container in _containers():
        argv = [str(part) for part in container["command"]]
        if argv[:2] == ["sh", "-c"]:
            argv = argv[2].split()
        seen.add(argv[0])
        if argv[0] == "gunicorn":
            port = _check_gunicorn(argv)
            assert port in {p["containerPort"] for p in container["ports"]}
        elif argv[0] == "celery":
            _check_celery(argv)
        else:
            assert argv[0] == "envcat", (component, argv)
            _check_envcat(argv)
    assert seen == {"gunicorn", "celery", "envcat"}


def _routes(app: Flask) -> set[str]:
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_probes_hit_the_real_health_routes(api_app: Flask, settings: Settings) -> None:
    from envcat.bff import create_app as create_bff

    apps = {"api": _routes(api_app), "bff": _routes(create_bff(settings))}
    probed = set()
    for component, _, container in _containers():
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is None or "httpGet" not in probe:
                continue
            path = probe["httpGet"]["path"]
            assert path in HEALTH_PATHS and path in apps[component], (component, path)
            port = probe["httpGet"]["port"]
            assert port in {p["name"] for p in container["ports"]}
            probed.add((component, kind, path))
    assert probed == {
        (c, k, p)
        for c in ("api", "bff")
        for k, p in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"))
    }


def test_every_variable_is_a_setting() -> None:
    names = set()
    for doc in _all():
        if doc["kind"] == "ConfigMap":
            names |= set(doc["data"])
    for _, _, container in _containers():
        names |= {entry["name"] for entry in container.get("env", [])}
    unknown = names - SETTINGS - LIBRARY_VARIABLES
    assert not unknown, sorted(unknown)


def test_secrets_are_referenced_never_inlined_and_reach_only_their_pods() -> None:
    assert not [doc for doc in _all() if doc["kind"] == "Secret"]
    secret_fields = {
        name.upper()
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    } | {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    for doc in _all():
        if doc["kind"] == "ConfigMap":
            assert not set(doc["data"]) & secret_fields, doc["metadata"]["name"]
    for component, _, container in _containers():
        refs = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
        for entry in container.get("env", []):
            assert entry["name"] not in secret_fields or "valueFrom" in entry, entry
            if "secretKeyRef" in entry.get("valueFrom", {}):
                refs.add(entry["valueFrom"]["secretKeyRef"]["name"])
        for ref in refs:
            assert component in SECRET_HOLDERS[ref], f"{component} must not get {ref}"
    bff = next(c for component, _, c in _containers() if component == "bff")
    bff_refs = {e["secretRef"]["name"] for e in bff["envFrom"] if "secretRef" in e}
    assert bff_refs == {"envcat-common", "envcat-bff"}  # no keyring, signing key or database


def test_every_pod_is_non_root_with_a_read_only_root_filesystem() -> None:
    for component, spec, container in _containers():
        assert spec["securityContext"]["runAsNonRoot"] is True, component
        assert spec["securityContext"]["runAsUser"] == 10001  # the image's envcat user
        assert spec["automountServiceAccountToken"] is False
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, component
        assert context["allowPrivilegeEscalation"] is False, component
        assert context["capabilities"]["drop"] == ["ALL"], component
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{component}: gunicorn, celery and sh need a writable /tmp"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if "PROMETHEUS_MULTIPROC_DIR" in env:
            assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts


def test_beat_is_single_and_workers_autoscale() -> None:
    deployments = {doc["metadata"]["name"]: doc for doc in _all() if doc["kind"] == "Deployment"}
    beat = deployments["envcat-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    hpas = [doc for doc in _all() if doc["kind"] == "HorizontalPodAutoscaler"]
    base = [doc for path in K8S.glob("hpa-workers.yaml") for doc in _documents(path)]
    targets = {doc["spec"]["scaleTargetRef"]["name"] for doc in hpas}
    assert "envcat-beat" not in targets
    assert {doc["spec"]["scaleTargetRef"]["name"] for doc in base} == {
        f"envcat-worker-{queue}" for queue in QUEUES
    }
    for doc in base:
        assert doc["spec"]["scaleTargetRef"]["name"] in deployments
        assert [m["resource"]["name"] for m in doc["spec"]["metrics"]] == ["cpu"]
    (queue_hpa,) = _documents(K8S / "hpa-queue-depth.yaml")
    external = next(m for m in queue_hpa["spec"]["metrics"] if m["type"] == "External")
    assert external["external"]["metric"]["name"] == "envcat_queue_depth"
    assert external["external"]["metric"]["selector"]["matchLabels"] == {"queue": "approvals"}


def test_migrations_run_as_a_job_and_backups_as_a_cronjob() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]): doc for doc in _all()}
    job = kinds[("Job", "envcat-migrate")]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["envcat", "server", "init-db"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    cron = kinds[("CronJob", "envcat-backup")]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (backup,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {entry["name"] for entry in backup["env"]}
    assert "BUNDLE_KMS_KEY" not in env and "BACKUP_PUBLIC_KEY" in env


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kustomize_renders_every_resource() -> None:
    rendered = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    expected = [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name not in OPTIONAL | {"kustomization.yaml"}
        for doc in _documents(path)
    ]
    assert len(documents) == len(expected)
    for doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "envcat"


def _cluster_answers() -> bool:
    if KUBECTL is None:
        return False
    probe = subprocess.run(
        [KUBECTL, "version", "--request-timeout=3s"], capture_output=True, timeout=10, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _cluster_answers(),
    reason="kubectl --dry-run=client needs a cluster's API discovery; none answers here",
)
def test_kubectl_dry_run_accepts_the_manifests() -> None:
    assert KUBECTL is not None
    subprocess.run(
        [KUBECTL, "apply", "--dry-run=client", "-k", str(K8S)],
        capture_output=True,
        timeout=120,
        check=True,
    )
