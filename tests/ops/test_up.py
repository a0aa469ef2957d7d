"""`up` before anything starts (errors in one line), and the idempotent --demo setup."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from envcat.bff.apiclient import HmacAuth, Signer
from envcat.core.settings import Settings
from envcat.ops import demo
from envcat.ops.commands import server
from envcat.ops.config import OpsError, ensure_data_dir, ensure_private_file
from envcat.ops.supervisor import Output, ProcessSpec, Supervisor
from envcat.ops.up import REDIS_MISSING, Up, UpOptions, app_specs, browser_host, redis_config
from envcat.workers.factory import QUEUES
from tests.support import free_port
from tests.support.stack import LiveStack


def test_missing_redis_server_gives_the_install_hint(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ["up", "--api-port", str(free_port()), "--bff-port", str(free_port())]
    result = CliRunner().invoke(
        server, [*args, "--data-dir", str(data_dir)], env={"PATH": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert result.stderr == REDIS_MISSING + "\n"
    assert "apt-get install redis-server" in result.stderr
    assert "brew install redis" in result.stderr
    # The secrets were still made once, privately, for the next attempt.
    assert stat.S_IMODE((data_dir / "secrets.env").stat().st_mode) == 0o600


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["up", "--api-port", str(port), "--bff-port", str(free_port())]
        result = CliRunner().invoke(server, [*args, "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert result.stderr == f"envcat: 127.0.0.1:{port} is in use; choose another with --api-port\n"
    assert not (tmp_path / "data").exists()


def test_same_port_twice_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(server, ["up", "--api-port", "7000", "--bff-port", "7000"])
    assert result.exit_code == 2
    assert "--api-port" in result.stderr


def test_children_get_the_settings_and_their_own_metrics_dirs(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("bundle_kms_key", settings.kms_key_value())
    options = UpOptions("0.0.0.0", 15000, 18888, tmp_path, demo=False)  # noqa: S104
    specs = {spec.name: spec for spec in app_specs(options, tmp_path, settings)}
    assert list(specs) == ["api", "worker", "beat", "bff"]
    assert specs["api"].argv[-3:] == ["--bind", "127.0.0.1:15000", "envcat.api.wsgi:app"]
    assert specs["bff"].argv[-3:] == ["--bind", "0.0.0.0:18888", "envcat.bff.wsgi:app"]
    config = Path(specs["api"].argv[specs["api"].argv.index("--config") + 1])
    assert 'worker_class = "gevent"' in config.read_text()  # long polls need gevent
    bff = specs["bff"].argv
    bff_config = Path(bff[bff.index("--config") + 1])
    assert 'worker_class = "gevent"' in bff_config.read_text()
    assert "load_or_halt(needs_kms_key=False)" in bff_config.read_text()
    assert "gevent" not in specs["worker"].argv  # STYLE: keep gevent out of the worker
    worker = specs["worker"].argv
    assert worker[worker.index("-Q") + 1] == ",".join(QUEUES)
    assert specs["beat"].argv[specs["beat"].argv.index("--schedule") + 1] == str(
        tmp_path / "celerybeat-schedule"
    )
    dirs = {specs[name].env["PROMETHEUS_MULTIPROC_DIR"] for name in ("api", "worker", "bff")}
    assert len(dirs) == 3
    for spec in specs.values():
        assert spec.env["BFF_SHARED_SECRET"] == settings.bff_shared_secret.get_secret_value()
    for name in ("api", "worker", "beat"):
        assert specs[name].env["DATABASE_URL"] == settings.database_url
    # The bff reaches the database only through the api: no URL, no password.
    assert "DATABASE_URL" not in specs["bff"].env
    keyring = settings.kms_key_value()
    for name in ("api", "worker", "beat"):
        assert specs[name].env["BUNDLE_KMS_KEY"] == keyring
    # The internet-facing bff never holds the keyring, even when this shell exports it.
    assert keyring not in json.dumps(specs["bff"].env)


@pytest.mark.parametrize(
    ("host", "shown"),
    [("127.0.0.1", "localhost"), ("0.0.0.0", "localhost"), ("envcat.lan", "envcat.lan")],  # noqa: S104
)
def test_urls_use_a_host_a_browser_can_open(host: str, shown: str) -> None:
    assert browser_host(host) == shown


def _bundle(stack: LiveStack, account: demo.DemoAccount) -> dict[str, Any]:
    auth = HmacAuth(stack.secret, Signer(account.user_id, account.tenant_id))
    with httpx.Client(base_url=stack.api_url, auth=auth, timeout=10) as client:
        detail = client.get(f"/api/v1/bundles/{account.bundle_id}")
        assert detail.status_code == 200
        listing = client.get("/api/v1/keys").json()["keys"]
    return {"detail": detail.json(), "library": listing}


def test_demo_setup_is_idempotent(live_stack, tmp_path: Path) -> None:
    first = demo.ensure_demo(live_stack.api_url, live_stack.secret, tmp_path)
    assert first.email == demo.DEMO_EMAIL
    assert stat.S_IMODE((tmp_path / demo.DEMO_FILE).stat().st_mode) == 0o600
    before = _bundle(live_stack, first)
    keys = {key["name"]: key for key in before["detail"]["keys"]}
    assert set(keys) == {"DATABASE_URL", "API_TOKEN", "DEBUG"}
    assert keys["DEBUG"]["value"] == "true"
    assert keys["API_TOKEN"]["value"] is None  # secret: masked

    second = demo.ensure_demo(live_stack.api_url, live_stack.secret, tmp_path)
    assert second == first
    after = _bundle(live_stack, second)
    assert [k["id"] for k in after["detail"]["keys"]] == [k["id"] for k in before["detail"]["keys"]]
    assert len(after["library"]) == 3


def test_demo_reattaches_a_detached_key(live_stack, tmp_path: Path) -> None:
    account = demo.ensure_demo(live_stack.api_url, live_stack.secret, tmp_path)
    keys = _bundle(live_stack, account)["detail"]["keys"]
    token = next(key for key in keys if key["name"] == "API_TOKEN")
    auth = HmacAuth(live_stack.secret, Signer(account.user_id, account.tenant_id))
    with httpx.Client(base_url=live_stack.api_url, auth=auth, timeout=10) as client:
        path = f"/api/v1/bundles/{account.bundle_id}/keys/{token['id']}"
        assert client.delete(path).status_code == 204
    demo.ensure_demo(live_stack.api_url, live_stack.secret, tmp_path)
    again = {key["name"]: key["id"] for key in _bundle(live_stack, account)["detail"]["keys"]}
    assert again["API_TOKEN"] == token["id"]


def test_demo_with_a_forgotten_password_says_what_to_do(live_stack, tmp_path: Path) -> None:
    demo.ensure_demo(live_stack.api_url, live_stack.secret, tmp_path)
    (tmp_path / demo.DEMO_FILE).unlink()
    with pytest.raises(OpsError, match="exists with another password"):
        demo.ensure_demo(live_stack.api_url, live_stack.secret, tmp_path)


def _up_with(children: list[ProcessSpec], settings, tmp_path: Path) -> Up:
    output = Output()
    up = Up(
        UpOptions("127.0.0.1", 1, 2, tmp_path, demo=False),
        tmp_path,
        settings,
        output,
        Supervisor(output),
        threading.Event(),
    )
    for spec in children:
        up.supervisor.start(spec)
    return up


def _python(name: str, code: str) -> ProcessSpec:
    return ProcessSpec(name, [sys.executable, "-c", code], dict(os.environ))


def test_a_child_that_dies_stops_up_with_its_name(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    up = _up_with(
        [_python("api", "import time; time.sleep(60)"), _python("worker", "raise SystemExit(3)")],
        settings,
        tmp_path,
    )
    try:
        with pytest.raises(OpsError) as raised:
            up.watch()
    finally:
        up.supervisor.stop_all(grace=2)
    assert raised.value.message == "envcat: worker exited with code 3; stopped everything"
    assert "envcat | worker exited with code 3; stopping everything" in capsys.readouterr().out
    assert all(not child.is_running() for child in up.supervisor.children)


def test_a_stop_signal_ends_up_with_exit_code_zero(settings, tmp_path: Path) -> None:
    up = _up_with([_python("api", "import time; time.sleep(60)")], settings, tmp_path)
    try:
        threading.Timer(0.3, up.stopping.set).start()
        assert up.watch() == 0
    finally:
        up.supervisor.stop_all(grace=2)
    assert not up.supervisor.children[0].is_running()


def test_demo_against_an_unreachable_api_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(OpsError) as raised:
        demo.ensure_demo(f"http://127.0.0.1:{free_port()}", "0" * 64, tmp_path)
    assert raised.value.message == "envcat: demo setup failed: ConnectError calling the api"


def test_the_private_redis_config_holds_the_password_not_the_command_line(tmp_path: Path) -> None:
    text = redis_config(6390, tmp_path, "f" * 64)
    assert f"requirepass {'f' * 64}" in text
    assert "bind 127.0.0.1" in text
    assert 'save ""' in text


def test_data_dir_and_database_file_become_private_when_they_already_exist(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    ensure_data_dir(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    database = data_dir / "envcat.db"
    database.write_bytes(b"")
    database.chmod(0o644)
    ensure_private_file(database)
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    fresh = data_dir / "fresh.db"
    ensure_private_file(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
