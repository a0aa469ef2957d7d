"""`envcat init` writes .envcat.toml; `envcat trust` pins a server's key (issue #11)."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from envcat.cli.main import cli
from envcat.cli.runtime import Runtime
from tests.cli.cli_fakes import (
    NEW_SEED,
    OTHER_SEED,
    SERVER_SEED,
    FakeApi,
    FakeClock,
    fingerprint_of,
    keyring,
    mock_client,
)

SERVER = "https://envcat.test"
PRIMARY = fingerprint_of(SERVER_SEED)


def invoke(api: FakeApi, *args: str, stdin: str | None = None) -> Result:
    runtime = Runtime(client=mock_client(api), interactive=False)
    return CliRunner().invoke(cli, list(args), obj=runtime, input=stdin)


def project() -> dict[str, object]:
    return tomllib.loads(Path(".envcat.toml").read_text())


# --- init -------------------------------------------------------------------------


def test_init_yes_writes_the_project_file_and_pins(api: FakeApi) -> None:
    result = invoke(
        api, "init", "--server", SERVER, "-w", "acme", "--bundle", "production/api", "--yes"
    )
    assert result.exit_code == 0, result.stderr
    assert project() == {
        "server": SERVER,
        "workspace": "acme",
        "bundle": "production/api",
        "server_fingerprint": PRIMARY,
        "allow_vars": [],
    }
    assert stat.S_IMODE(Path(".envcat.toml").stat().st_mode) == 0o644
    assert f"{SERVER} signs deliveries with the key {PRIMARY}" in result.stderr
    assert result.stdout == ""
    assert api.calls_to("GET", "/api/v1/server-key")


def test_init_asks_for_each_setting(api: FakeApi) -> None:
    result = invoke(api, "init", stdin=f"{SERVER}\nacme\nstaging/web\ny\n")
    assert result.exit_code == 0, result.stderr
    assert project()["workspace"] == "acme"
    assert project()["bundle"] == "staging/web"
    assert project()["server_fingerprint"] == PRIMARY
    assert "EnvCat server" in result.stderr and "Workspace" in result.stderr


def test_init_reasks_a_bad_answer_and_can_skip_the_pin(api: FakeApi) -> None:
    result = invoke(api, "init", stdin=f"not-a-url\n{SERVER}\nBad Slug\nacme\n\nn\n")
    assert result.exit_code == 0, result.stderr
    assert "expected an http:// or https:// URL" in result.stderr
    assert "not a workspace slug" in result.stderr
    assert "server_fingerprint" not in project()
    assert "bundle" not in project()


def test_init_refuses_to_overwrite_without_force(api: FakeApi) -> None:
    Path(".envcat.toml").write_text('workspace = "mine"\n')
    result = invoke(api, "init", "--server", SERVER, "-w", "acme", "--yes")
    assert result.exit_code == 1
    assert "already exists; pass --force" in result.stderr
    assert Path(".envcat.toml").read_text() == 'workspace = "mine"\n'
    assert api.calls == []
    result = invoke(api, "init", "--server", SERVER, "-w", "acme", "--yes", "--force")
    assert result.exit_code == 0, result.stderr
    assert project()["workspace"] == "acme"


def test_init_refuses_a_symlinked_project_file(api: FakeApi, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    Path(".envcat.toml").symlink_to(target)
    result = invoke(api, "init", "--server", SERVER, "-w", "acme", "--yes", "--force")
    assert result.exit_code == 1
    assert "symbolic link" in result.stderr
    assert target.read_text() == "keep"


def test_init_yes_needs_a_workspace(api: FakeApi) -> None:
    result = invoke(api, "init", "--server", SERVER, "--yes")
    assert result.exit_code == 2
    assert "needs --workspace" in result.stderr
    assert not Path(".envcat.toml").exists()


def test_init_refuses_plain_http_to_another_host(api: FakeApi) -> None:
    result = invoke(api, "init", "--server", "http://envcat.example", "-w", "acme", "--yes")
    assert result.exit_code == 2
    assert not Path(".envcat.toml").exists()


def test_init_quotes_values_as_toml(api: FakeApi) -> None:
    result = invoke(api, "init", "--server", SERVER, "-w", "acme", "--bundle", 'a"b\\c', "--yes")
    assert result.exit_code == 0, result.stderr
    assert project()["bundle"] == 'a"b\\c'


def test_the_written_project_file_drives_get(api: FakeApi, clock: FakeClock) -> None:
    invoke(api, "init", "--server", SERVER, "-w", "acme", "--bundle", "production/api", "--yes")
    runtime = Runtime(client=mock_client(api), clock=clock.clock(), interactive=False)
    result = CliRunner().invoke(cli, ["get"], obj=runtime, env={"ENVCAT_WORKSPACE": ""})
    assert result.exit_code == 0, result.stderr
    assert "First use" not in result.stderr  # pinned by init
    body = api.calls_to("POST")[0].body
    assert (body["workspace"], body["bundle"]) == ("acme", "production/api")


# --- trust ------------------------------------------------------------------------


def test_trust_yes_pins_the_key(api: FakeApi, known_servers: Path) -> None:
    result = invoke(api, "trust", "--server", SERVER, "--yes")
    assert result.exit_code == 0, result.stderr
    assert known_servers.read_text() == f"{SERVER} {PRIMARY}\n"
    assert stat.S_IMODE(known_servers.stat().st_mode) == 0o600
    assert stat.S_IMODE(known_servers.parent.stat().st_mode) == 0o700
    assert f"Pinned {PRIMARY} for {SERVER}" in result.stderr


def test_trust_asks_and_a_no_pins_nothing(api: FakeApi, known_servers: Path) -> None:
    result = invoke(api, "trust", "--server", SERVER, stdin="n\n")
    assert result.exit_code == 1
    assert PRIMARY in result.stderr
    assert not known_servers.exists()


def test_trust_with_the_right_fingerprint_needs_no_question(
    api: FakeApi, known_servers: Path
) -> None:
    result = invoke(api, "trust", "--server", SERVER, "--fingerprint", PRIMARY)
    assert result.exit_code == 0, result.stderr
    assert known_servers.read_text() == f"{SERVER} {PRIMARY}\n"


def test_trust_with_another_fingerprint_is_refused(api: FakeApi, known_servers: Path) -> None:
    expected = fingerprint_of(OTHER_SEED)
    result = invoke(api, "trust", "--server", SERVER, "--fingerprint", expected)
    assert result.exit_code == 6
    assert f"offers {PRIMARY}, not {expected}" in result.stderr
    assert not known_servers.exists()


def test_trust_replaces_an_old_pin_and_keeps_others(api: FakeApi, known_servers: Path) -> None:
    known_servers.parent.mkdir(parents=True)
    known_servers.write_text(
        f"# a comment\nhttps://other.test {PRIMARY}\n{SERVER} {fingerprint_of(OTHER_SEED)}\n"
    )
    result = invoke(api, "trust", "--server", SERVER, "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"(replacing {fingerprint_of(OTHER_SEED)})" in result.stderr
    assert known_servers.read_text() == f"https://other.test {PRIMARY}\n{SERVER} {PRIMARY}\n"


def test_trust_shows_the_keys_of_a_rotation(api: FakeApi) -> None:
    api.signing = keyring(NEW_SEED, SERVER_SEED)
    result = invoke(api, "trust", "--server", SERVER, "--yes")
    assert fingerprint_of(NEW_SEED) in result.stderr
    assert f"also still signing during a key rotation: {PRIMARY}" in result.stderr


@pytest.mark.parametrize(
    "reply",
    [
        {"public_key": "short"},
        {"public_key": "A" * 44, "fingerprint": "SHA256:wrong"},
        {},
    ],
)
def test_trust_refuses_a_malformed_key_reply(reply: dict[str, str], known_servers: Path) -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=reply)),
        base_url=SERVER,
    )
    result = CliRunner().invoke(cli, ["trust", "--server", SERVER, "--yes"], obj=client)
    assert result.exit_code == 1
    assert "the server's key reply is" in result.stderr
    assert not known_servers.exists()


def test_trust_rejects_a_malformed_fingerprint_option(api: FakeApi) -> None:
    result = invoke(api, "trust", "--server", SERVER, "--fingerprint", "abc")
    assert result.exit_code == 2
    assert api.calls == []


def test_init_with_an_unreachable_server_says_how_to_go_on(unused_port: int) -> None:
    server = f"http://127.0.0.1:{unused_port}"
    result = CliRunner().invoke(cli, ["init", "--server", server, "-w", "acme", "--yes"])
    assert result.exit_code == 5
    assert "pass --no-pin" in result.stderr
    assert not Path(".envcat.toml").exists()
    result = CliRunner().invoke(
        cli, ["init", "--server", server, "-w", "acme", "--yes", "--no-pin"]
    )
    assert result.exit_code == 0, result.stderr
    assert project() == {"server": server, "workspace": "acme", "allow_vars": []}


def test_trust_points_at_a_project_pin_that_overrides_it(api: FakeApi) -> None:
    Path(".envcat.toml").write_text(f'server_fingerprint = "{fingerprint_of(OTHER_SEED)}"\n')
    result = invoke(api, "trust", "--server", SERVER, "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"pins {fingerprint_of(OTHER_SEED)}, which takes precedence here" in result.stderr
    assert f"update its server_fingerprint to {PRIMARY}" in result.stderr
