"""The real `envcat` process against a stub HTTP server on 127.0.0.1.

These cover what CliRunner cannot: `run` replacing the process (exec), the
child's exit code and signals, SIGTERM, SIGHUP and a real Ctrl-C (SIGINT)
during a long poll, and `eval "$(envcat get …)"` in a real shell.

The suite may itself run with SIGINT ignored (`nohup`), which children
inherit: only the SIGINT test depends on it, and it restores the default
disposition in the child first.
"""

from __future__ import annotations

import ast
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.cli_fakes import (
    NEW_SEED,
    SERVER_SEED,
    FakeApi,
    fingerprint_of,
    keyring,
    serve,
)
from tests.support.cli_process import ENVCAT, clean_env


@pytest.fixture
def server(api: FakeApi) -> Iterator[str]:
    with serve(api) as url:
        yield url


def envcat(
    *args: str, tmp_path: Path, timeout: float = 30, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENVCAT, *args],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path, **extra),
        cwd=tmp_path,
        timeout=timeout,
        check=False,
    )


def test_run_execs_the_command_with_the_values(api: FakeApi, server: str, tmp_path: Path) -> None:
    api.values = {"API_KEY": "it's $ecret\nline 2", "HOME": "/overridden"}
    child = (
        "import os, sys; "
        "sys.stdout.write(repr((os.environ['API_KEY'], os.environ['HOME'], "
        "os.environ['KEPT'], os.getpid(), os.getppid()))); sys.exit(7)"
    )
    argv = ["run", "--server", server, "prod/api", "--allow-var", "HOME", "--"]
    process = subprocess.Popen(
        [*ENVCAT, *argv, sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(tmp_path, KEPT="from the parent"),
        cwd=tmp_path,
    )
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 7, stderr
    secret, home, kept, pid, _ = ast.literal_eval(stdout)
    assert (secret, home, kept) == ("it's $ecret\nline 2", "/overridden", "from the parent")
    assert pid == process.pid, "the command must replace envcat, not run as its child"
    assert "Received 2 values from prod/api; running" in stderr
    assert api.calls_to("POST")[0].body["context"]["command"].startswith(sys.executable)


def test_the_approver_sees_the_child_command_redacted(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    argv = [sys.executable, "-c", "pass", "--password=hunter2", "-phunter2"]
    result = envcat("run", "--server", server, "--", *argv, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    body = api.calls_to("POST")[0].body
    assert body["context"]["command"].endswith("-c pass '--password=***' '-p***'")
    assert "hunter2" not in json.dumps(body)


def test_run_passes_the_childs_signal_through(api: FakeApi, server: str, tmp_path: Path) -> None:
    child = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = envcat("run", "--server", server, "--", sys.executable, "-c", child, tmp_path=tmp_path)
    assert result.returncode == -signal.SIGTERM


def test_run_command_not_found_asks_nothing(api: FakeApi, server: str, tmp_path: Path) -> None:
    result = envcat("run", "--server", server, "--", "no-such-command-xyz", tmp_path=tmp_path)
    assert result.returncode == 127
    assert "command not found: no-such-command-xyz" in result.stderr
    assert api.calls == []


def test_run_without_a_command_is_a_usage_error(tmp_path: Path) -> None:
    result = envcat("run", "prod/api", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "give the command after --" in result.stderr


def test_run_refuses_invalid_names_before_exec(api: FakeApi, server: str, tmp_path: Path) -> None:
    api.values = {"GOOD": "1", "BAD=NAME": "x"}
    marker = tmp_path / "ran"
    child = f"open({str(marker)!r}, 'w').close()"
    result = envcat("run", "--server", server, "--", sys.executable, "-c", child, tmp_path=tmp_path)
    assert result.returncode == 1
    assert "not a valid variable name" in result.stderr
    assert not marker.exists()


def _reset_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its Ctrl-C handler


def _interrupt_while_waiting(
    api: FakeApi,
    server: str,
    tmp_path: Path,
    signal_number: int,
    *command: str,
    **popen: object,
) -> tuple[int, str, str]:
    api.script = ["hold"]
    subcommand, *rest = command or ("get",)
    process = subprocess.Popen(
        [*ENVCAT, subcommand, "--server", server, *rest],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        **popen,  # type: ignore[call-overload]  # forwarded Popen keywords
    )
    try:
        assert api.wait_started.wait(20), "envcat never started waiting"
        process.send_signal(signal_number)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    return process.returncode, stdout, stderr


def test_ctrl_c_while_waiting_cancels_and_exits_130(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    code, stdout, stderr = _interrupt_while_waiting(
        api, server, tmp_path, signal.SIGINT, preexec_fn=_reset_sigint
    )
    assert code == 130, stderr
    assert stderr.endswith("Cancelled.\n")
    assert stdout == ""
    [delete] = api.calls_to("DELETE")
    assert delete.headers["x-poll-token"] == api.created["poll_token"]


@pytest.mark.parametrize(
    ("signal_number", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")]
)
def test_sigterm_and_sighup_while_waiting_cancel_the_request(
    api: FakeApi, server: str, tmp_path: Path, signal_number: int, name: str
) -> None:
    code, stdout, stderr = _interrupt_while_waiting(api, server, tmp_path, signal_number)
    assert code == 128 + signal_number, stderr
    assert stderr.endswith(f"Cancelled ({name}).\n")
    assert stdout == ""
    [delete] = api.calls_to("DELETE")
    assert delete.path == f"/api/v1/requests/{api.created['id']}"
    assert delete.headers["x-poll-token"] == api.created["poll_token"]


def test_sigterm_cancels_a_waiting_run_and_nothing_runs(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    code, _, stderr = _interrupt_while_waiting(
        api, server, tmp_path, signal.SIGTERM, "run", "--", "sh", "-c", "touch ran"
    )
    assert code == 128 + signal.SIGTERM, stderr
    assert len(api.calls_to("DELETE")) == 1
    assert not (tmp_path / "ran").exists()


def test_sigterm_cancels_even_when_sigint_is_ignored(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    def ignore_sigint() -> None:  # as `nohup envcat get … &` starts it
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    code, _, stderr = _interrupt_while_waiting(
        api, server, tmp_path, signal.SIGTERM, preexec_fn=ignore_sigint
    )
    assert code == 128 + signal.SIGTERM, stderr
    assert len(api.calls_to("DELETE")) == 1


@pytest.mark.parametrize("shell", ["bash", "dash", "zsh"])
def test_eval_of_get_in_a_real_shell(api: FakeApi, server: str, tmp_path: Path, shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here (CI installs it)")
    sentinel = tmp_path / "pwned"
    api.values = {"TOKEN": f"a'b\"c $(touch {sentinel}) `touch {sentinel}`\nend"}
    command = " ".join([*ENVCAT, "get", "--server", server, "prod/api"])
    script = f'eval "$({command})" && printf \'%s\' "$TOKEN"'
    result = subprocess.run(
        [shell, "-c", script],
        capture_output=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == api.values["TOKEN"].encode()
    assert not sentinel.exists()
    assert f"First use of {server}: its delivery key is SHA256:".encode() in result.stderr
    assert b"approved by alice@acme.dev in acme \xc2\xb7 prod/api" in result.stderr


def test_fish_source_of_get(api: FakeApi, server: str, tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed here (CI installs it)")
    api.values = {"TOKEN": "it's \\ fish\nline"}
    command = " ".join([*ENVCAT, "get", "--server", server, "--format", "fish"])
    result = subprocess.run(
        ["fish", "--no-config", "-c", f"{command} | source; printf '%s' \"$TOKEN\""],
        capture_output=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == api.values["TOKEN"].encode()
    assert b"First use of" in result.stderr


def test_version_of_the_module_entry_point(tmp_path: Path) -> None:
    result = envcat("--version", tmp_path=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("envcat ")


def test_a_rotation_moves_the_pin_of_the_real_process(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    known = tmp_path / "config" / "envcat" / "known_servers"
    known.parent.mkdir(parents=True)
    known.write_text(f"{server} {fingerprint_of(SERVER_SEED)}\n")
    api.signing = keyring(NEW_SEED, SERVER_SEED)
    result = envcat("get", "--server", server, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Server key rotated" in result.stderr
    assert known.read_text() == f"{server} {fingerprint_of(NEW_SEED)}\n"


def test_run_needs_no_arguments_in_a_configured_project(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    (tmp_path / ".envcat.toml").write_text(
        f'server = "{server}"\nworkspace = "acme"\nbundle = "production/api"\n'
        f'server_fingerprint = "{fingerprint_of(SERVER_SEED)}"\n'
    )
    env = clean_env(tmp_path)
    del env["ENVCAT_WORKSPACE"]
    result = subprocess.run(
        [*ENVCAT, "run", "--", "sh", "-c", 'printf %s "$API_KEY" > out'],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_text() == "s3cr3t"
    body = api.calls_to("POST")[0].body
    assert (body["workspace"], body["bundle"]) == ("acme", "production/api")
    assert "First use" not in result.stderr  # pinned by the project file
