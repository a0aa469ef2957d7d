"""`envcat get/run --oidc`, ENVCAT_TOKEN and `--format github` through the real CLI code
against the scripted fake api (issue #16)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from envcat.cli.main import cli
from envcat.cli.runtime import Runtime
from tests.cli.cli_fakes import FakeApi, FakeClock, mock_client
from tests.support.github import parse_github_env

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJlLWNhbmFyeQ"
SERVICE_TOKEN = "ect_0123456789ab_" + "s" * 43


def invoke(api: FakeApi, clock: FakeClock, *args: str, **env: str) -> Result:
    runtime = Runtime(client=mock_client(api), clock=clock.clock(), interactive=False)
    return CliRunner().invoke(cli, ["get", *args], obj=runtime, env=env)


def test_an_automatic_grant_shows_no_link_and_sends_the_token_once(
    api: FakeApi, clock: FakeClock
) -> None:
    api.workload_mode = "automatic"
    result = invoke(api, clock, "prod/api", "--oidc", ENVCAT_ID_TOKEN=TOKEN)
    assert result.exit_code == 0, result.stderr
    assert "Approved by trust policy for workload:github:acme/api@x" in result.stderr
    assert "Approve this request in a browser" not in result.stderr
    assert "Waiting for approval" not in result.stderr
    [post] = api.calls_to("POST")
    assert post.body["id_token"] == TOKEN
    assert all(TOKEN not in repr(call.query) + repr(call.headers) for call in api.calls)
    assert TOKEN not in result.stdout + result.stderr


def test_an_approval_grant_says_a_person_must_approve(api: FakeApi, clock: FakeClock) -> None:
    api.workload_mode = "approval"
    result = invoke(api, clock, "--oidc", ENVCAT_ID_TOKEN=TOKEN)
    assert result.exit_code == 0, result.stderr
    assert "needs a person to approve it" in result.stderr
    assert "Approve this request in a browser" in result.stderr


def test_envcat_token_goes_in_the_creation_call_only(api: FakeApi, clock: FakeClock) -> None:
    api.workload_mode = "automatic"
    result = invoke(api, clock, ENVCAT_TOKEN=SERVICE_TOKEN)
    assert result.exit_code == 0, result.stderr
    [post] = api.calls_to("POST")
    assert post.headers["authorization"] == f"Bearer {SERVICE_TOKEN}"
    assert "id_token" not in post.body
    waits = api.calls_to("GET", "/wait")
    assert waits and all("authorization" not in call.headers for call in waits)


def test_oidc_takes_precedence_over_envcat_token(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, "--oidc", ENVCAT_ID_TOKEN=TOKEN, ENVCAT_TOKEN=SERVICE_TOKEN)
    assert result.exit_code == 0, result.stderr
    [post] = api.calls_to("POST")
    assert "authorization" not in post.headers and post.body["id_token"] == TOKEN


def test_oidc_options_without_oidc_are_a_usage_error(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, "--audience", "x")
    assert result.exit_code == 2
    assert "go with --oidc" in result.stderr
    assert api.calls == []


def test_format_github_needs_github_env_before_asking(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, "--format", "github")
    assert result.exit_code == 2
    assert "$GITHUB_ENV" in result.stderr
    assert api.calls == []


def test_format_github_masks_on_stdout_and_writes_github_env(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    api.values = {"PEM": "line-one\nline-two", "PLAIN": "v"}
    target = tmp_path / "env"
    result = invoke(api, clock, "--format", "github", GITHUB_ENV=str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "::add-mask::line-one",
        "::add-mask::line-two",
        "::add-mask::v",
    ]
    assert parse_github_env(target.read_text()) == api.values
    assert "line-one" not in result.stderr


def test_format_github_refuses_runner_names_and_writes_nothing(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    api.values = {"GITHUB_TOKEN": "x", "OK": "1"}
    target = tmp_path / "env"
    result = invoke(api, clock, "--format", "github", GITHUB_ENV=str(target))
    assert result.exit_code == 1
    assert "GITHUB_TOKEN" in result.stderr and "nothing was written" in result.stderr
    assert result.stdout == "" and not target.exists()
