"""Where the workspace and server come from, and the transport rule (issue #11)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from envcat.cli.config import is_loopback, origin
from envcat.cli.main import cli
from envcat.cli.runtime import Runtime
from tests.cli.cli_fakes import FakeApi, FakeClock, mock_client


def invoke(api: FakeApi, clock: FakeClock, *args: str, env: dict[str, str] | None = None) -> Result:
    runtime = Runtime(client=mock_client(api), clock=clock.clock(), interactive=False)
    return CliRunner().invoke(cli, ["get", *args], obj=runtime, env=env)


def sent_workspace(api: FakeApi) -> str:
    return str(api.calls_to("POST")[-1].body["workspace"])


@pytest.fixture
def user_config(tmp_path: Path) -> Path:
    path = tmp_path / "config" / "envcat" / "config.toml"
    path.parent.mkdir(parents=True)
    return path


def test_no_workspace_anywhere_is_exit_2_saying_how(
    api: FakeApi, clock: FakeClock, user_config: Path
) -> None:
    result = invoke(api, clock, env={"ENVCAT_WORKSPACE": ""})
    assert result.exit_code == 2
    for hint in ("--workspace", "ENVCAT_WORKSPACE", "envcat init", str(user_config)):
        assert hint in result.stderr
    assert api.calls == []


def test_workspace_flag_wins_over_everything(
    api: FakeApi, clock: FakeClock, user_config: Path
) -> None:
    api.workspaces = ("flag", "env", "project", "user")
    Path(".envcat.toml").write_text('workspace = "project"\n')
    user_config.write_text('workspace = "user"\n')
    result = invoke(api, clock, "-w", "flag", env={"ENVCAT_WORKSPACE": "env"})
    assert result.exit_code == 0, result.stderr
    assert sent_workspace(api) == "flag"


@pytest.mark.parametrize(
    ("env", "project", "user", "expected"),
    [
        ("env", "project", "user", "env"),
        ("", "project", "user", "project"),
        ("", None, "user", "user"),
    ],
)
def test_workspace_resolution_order(
    api: FakeApi,
    clock: FakeClock,
    user_config: Path,
    env: str,
    project: str | None,
    user: str,
    expected: str,
) -> None:
    api.workspaces = (expected,)
    if project is not None:
        Path(".envcat.toml").write_text(f'workspace = "{project}"\n')
    user_config.write_text(f'workspace = "{user}"\n')
    invoke(api, clock, env={"ENVCAT_WORKSPACE": env})
    assert sent_workspace(api) == expected


def test_project_file_is_found_from_a_subdirectory(api: FakeApi, clock: FakeClock) -> None:
    Path(".envcat.toml").write_text('workspace = "acme"\nbundle = "production/api"\n')
    nested = Path("src/app/deep")
    nested.mkdir(parents=True)
    os.chdir(nested)
    result = invoke(api, clock, env={"ENVCAT_WORKSPACE": ""})
    assert result.exit_code == 0, result.stderr
    body = api.calls_to("POST")[0].body
    assert (body["workspace"], body["bundle"]) == ("acme", "production/api")


def test_unknown_workspace_is_one_clear_line(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, "-w", "nope")
    assert result.exit_code == 1
    assert "the server has no workspace 'nope'" in result.stderr


def test_a_bad_workspace_slug_is_a_usage_error(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, "-w", "Not A Slug")
    assert result.exit_code == 2
    assert "is not a workspace slug" in result.stderr
    assert api.calls == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('workspace = "acme', "is not valid TOML"),
        ("workspace = 3\n", "workspace must be a non-empty string"),
        ('workspaces = "acme"\n', "unknown setting 'workspaces'"),
        ('workspace = "UPPER"\n', "is not a slug"),
        ('server = "ftp://x"\n', "is not an http:// or https:// URL"),
        ('allow_vars = "PATH"\n', "allow_vars must be a list"),
        ('server_fingerprint = "SHA256:short"\n', "is not SHA256:<43 characters>"),
    ],
)
def test_a_malformed_project_file_is_exit_2_naming_it(
    api: FakeApi, clock: FakeClock, content: str, message: str
) -> None:
    path = Path(".envcat.toml")
    path.write_text(content)
    result = invoke(api, clock)
    assert result.exit_code == 2
    assert str(path.absolute()) in result.stderr
    assert message in result.stderr
    assert api.calls == []


def test_a_malformed_user_config_is_exit_2_naming_it(
    api: FakeApi, clock: FakeClock, user_config: Path
) -> None:
    user_config.write_text("[broken\n")
    result = invoke(api, clock)
    assert result.exit_code == 2
    assert f"{user_config} is not valid TOML" in result.stderr


def test_user_config_honours_xdg_config_home(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "xdg"
    (elsewhere / "envcat").mkdir(parents=True)
    (elsewhere / "envcat" / "config.toml").write_text('workspace = "acme"\n')
    result = invoke(api, clock, env={"ENVCAT_WORKSPACE": "", "XDG_CONFIG_HOME": str(elsewhere)})
    assert result.exit_code == 0, result.stderr
    assert (elsewhere / "envcat" / "known_servers").exists()


@pytest.mark.parametrize(
    ("flag", "env", "project", "user", "expected"),
    [
        ("https://flag.test", "https://env.test", "https://p.test", "https://u.test", "flag"),
        (None, "https://env.test", "https://p.test", "https://u.test", "env"),
        (None, None, "https://p.test", "https://u.test", "p"),
        (None, None, None, "https://u.test", "u"),
        (None, None, None, None, "localhost:8888"),
    ],
)
def test_server_resolution_order(
    api: FakeApi,
    clock: FakeClock,
    user_config: Path,
    known_servers: Path,
    flag: str | None,
    env: str | None,
    project: str | None,
    user: str | None,
    expected: str,
) -> None:
    if project:
        Path(".envcat.toml").write_text(f'server = "{project}"\n')
    if user:
        user_config.write_text(f'server = "{user}"\n')
    args = ["--server", flag] if flag else []
    result = invoke(api, clock, *args, env={"ENVCAT_SERVER": env} if env else None)
    assert result.exit_code == 0, result.stderr
    assert expected in known_servers.read_text().split()[0]  # pinned under that origin


@pytest.mark.parametrize(
    "server", ["http://envcat.example", "http://10.0.0.5:8888", "http://[2001:db8::1]"]
)
def test_plain_http_to_another_host_is_refused(api: FakeApi, clock: FakeClock, server: str) -> None:
    result = invoke(api, clock, "--server", server)
    assert result.exit_code == 2
    assert "refusing plain http://" in result.stderr
    assert "--insecure-http" in result.stderr
    assert api.calls == []


def test_plain_http_from_the_project_file_is_refused_too(api: FakeApi, clock: FakeClock) -> None:
    Path(".envcat.toml").write_text('server = "http://envcat.example"\n')
    result = invoke(api, clock)
    assert result.exit_code == 2
    assert "refusing plain http:// to http://envcat.example" in result.stderr


def test_insecure_http_warns_and_goes_on(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, "--server", "http://envcat.example", "--insecure-http")
    assert result.exit_code == 0, result.stderr
    assert "Warning: --insecure-http" in result.stderr


@pytest.mark.parametrize(
    ("server", "loopback"),
    [
        ("http://localhost:8888", True),
        ("http://127.0.0.1:1", True),
        ("http://127.8.9.10", True),
        ("http://[::1]:8888", True),
        ("http://LOCALHOST", True),
        ("http://localhost.evil.com", False),
        ("http://127.0.0.1.nip.io", False),
        ("http://0.0.0.0", False),
        ("http://[::ffff:10.0.0.1]", False),
    ],
)
def test_loopback_is_recognised(server: str, loopback: bool) -> None:
    assert is_loopback(server) is loopback


def test_origin_normalises_the_server_url() -> None:
    assert origin("HTTPS://Envcat.Example:443/x/") == "https://envcat.example"
    assert origin("http://127.0.0.1:8888/") == "http://127.0.0.1:8888"
    assert origin("http://[::1]:80") == "http://[::1]"


def test_run_without_a_workspace_asks_nothing(api: FakeApi, clock: FakeClock) -> None:
    runtime = Runtime(client=mock_client(api), clock=clock.clock(), interactive=False)
    result = CliRunner().invoke(
        cli, ["run", "--", "true"], obj=runtime, env={"ENVCAT_WORKSPACE": ""}
    )
    assert result.exit_code == 2
    assert "no workspace" in result.stderr
    assert api.calls == []


def test_trust_refuses_plain_http_to_another_host(api: FakeApi) -> None:
    result = CliRunner().invoke(
        cli, ["trust", "--server", "http://envcat.example", "--yes"], obj=mock_client(api)
    )
    assert result.exit_code == 2
    assert "refusing plain http://" in result.stderr
    assert api.calls == []


def test_a_project_file_owned_by_another_user_is_refused(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    planted = tmp_path / ".envcat.toml"  # above the cwd, as in a shared /tmp
    planted.write_text('server = "https://attacker.example"\nallow_vars = ["LD_PRELOAD"]\n')
    os.chown(planted, 4242, 4242)
    result = invoke(api, clock)
    assert result.exit_code == 2
    assert f"{planted} belongs to another user (uid 4242)" in result.stderr
    assert api.calls == []
