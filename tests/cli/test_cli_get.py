"""`envcat get` through CliRunner against the in-memory API (httpx.MockTransport)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from envcat.cli.formats import render
from envcat.cli.main import cli
from envcat.cli.runtime import Runtime
from tests.cli.cli_fakes import FakeApi, FakeClock, mock_client

VALUES = {"DATABASE_URL": "postgres://u:p@db/app", "QUOTE": 'it\'s "fine"', "EMPTY": ""}


def invoke(api: FakeApi, clock: FakeClock, *args: str, interactive: bool = False) -> Result:
    runtime = Runtime(client=mock_client(api), clock=clock.clock(), interactive=interactive)
    return CliRunner().invoke(cli, ["get", *args], obj=runtime)


@pytest.mark.parametrize("fmt", ["sh", "json", "dotenv", "fish", "docker"])
def test_delivered_values_go_to_stdout_only(api: FakeApi, clock: FakeClock, fmt: str) -> None:
    api.values = VALUES
    result = invoke(api, clock, "production/api", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == render(VALUES, fmt).encode()
    url = api.created["verification_uri_complete"]
    assert url in result.stderr
    assert api.created["user_code"] in result.stderr
    assert url not in result.stdout
    assert "approved by alice@acme.dev in acme · production/api" in result.stderr
    assert "Received 3 values from production/api." in result.stderr


def test_default_format_is_sh(api: FakeApi, clock: FakeClock) -> None:
    api.values = VALUES
    result = invoke(api, clock)
    assert result.stdout == render(VALUES, "sh")


def test_accepts_a_bare_httpx_client_as_ctx_obj(api: FakeApi) -> None:
    result = CliRunner().invoke(cli, ["get", "--format", "json"], obj=mock_client(api))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == api.values


def test_request_carries_key_hints_and_context(api: FakeApi, clock: FakeClock) -> None:
    api.values = {"A": "1", "B_2": "2"}
    result = invoke(api, clock, "production/api", "-k", "A", "-k", "B_2")
    assert result.exit_code == 0, result.stderr
    body = api.calls_to("POST")[0].body
    assert len(base64.b64decode(body["client_pubkey"], validate=True)) == 32
    assert body["bundle"] == "production/api"
    assert body["template_keys"] == ["A", "B_2"]
    assert body["workspace"] == "acme"
    context = body["context"]
    assert context["command"] == "envcat get production/api -k A -k B_2"
    assert context["client"].startswith("envcat/")
    assert context["hostname"] and context["cwd"]
    assert set(context) == {"hostname", "cwd", "command", "git_remote", "client"}


def test_no_bundle_or_keys_sends_no_hints(api: FakeApi, clock: FakeClock) -> None:
    invoke(api, clock)
    body = api.calls_to("POST")[0].body
    assert "bundle" not in body
    assert "template_keys" not in body


def test_every_request_uses_a_fresh_key(api: FakeApi, clock: FakeClock) -> None:
    invoke(api, clock)
    api.script = ["ready"]
    invoke(api, clock)
    first, second = (call.body["client_pubkey"] for call in api.calls_to("POST"))
    assert first != second


def test_polls_carry_the_poll_token_and_a_long_poll_timeout(api: FakeApi, clock: FakeClock) -> None:
    invoke(api, clock)
    wait = api.calls_to("GET", "/wait")[0]
    assert wait.headers["x-poll-token"] == api.created["poll_token"]
    assert wait.query["timeout"] == "25"


def test_pending_then_ready_polls_no_faster_than_interval(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["pending", "pending", "ready"]
    result = invoke(api, clock, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert len(api.calls_to("GET", "/wait")) == 3
    assert clock.sleeps == [5, 5]
    assert json.loads(result.stdout) == api.values


def test_slow_down_adds_five_seconds_for_good(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["slow_down", "slow_down", "pending", "pending", "ready"]
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert clock.sleeps == [10, 15, 15, 15]


def test_rate_limit_honours_retry_after(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["rate_limited", "ready"]
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert clock.sleeps == [7]


def test_denied_exits_4(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["denied"]
    result = invoke(api, clock)
    assert result.exit_code == 4
    assert "denied" in result.stderr
    assert result.stdout == ""


def test_server_side_expiry_exits_3(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["expired"]
    result = invoke(api, clock)
    assert result.exit_code == 3
    assert "expired" in result.stderr


def test_failed_exits_1_with_the_server_message(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["failed"]
    result = invoke(api, clock)
    assert result.exit_code == 1
    assert "Key STRIPE_KEY no longer decrypts." in result.stderr


def test_invalid_poll_token_exits_1(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["bad_token"]
    result = invoke(api, clock)
    assert result.exit_code == 1
    assert "invalid_poll_token" in result.stderr


def test_pending_until_the_request_expires_exits_3_and_cancels(
    api: FakeApi, clock: FakeClock
) -> None:
    api.expires_in = 60
    api.script = []  # pending forever
    result = invoke(api, clock)
    assert result.exit_code == 3
    assert "expired before anyone approved it" in result.stderr
    assert sum(clock.sleeps) == pytest.approx(60)
    assert len(api.calls_to("DELETE")) == 1


def test_timeout_bounds_the_wait_and_cancels(api: FakeApi, clock: FakeClock) -> None:
    api.script = []
    result = invoke(api, clock, "--timeout", "12")
    assert result.exit_code == 3
    assert "--timeout" in result.stderr
    assert [call.query["timeout"] for call in api.calls_to("GET", "/wait")] == ["12", "7", "2"]
    assert len(api.calls_to("DELETE")) == 1


def test_network_errors_are_retried_with_backoff(api: FakeApi, clock: FakeClock) -> None:
    request = httpx.Request("GET", "http://envcat.test/")
    api.script = [
        httpx.ConnectError("refused", request=request),
        httpx.ReadTimeout("slow", request=request),
        httpx.RemoteProtocolError("dropped", request=request),
        "ready",
    ]
    result = invoke(api, clock, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert "connection lost, retrying" in result.stderr


def test_backoff_is_capped_and_gives_up_at_expiry_with_exit_5(
    api: FakeApi, clock: FakeClock
) -> None:
    api.expires_in = 60
    request = httpx.Request("GET", "http://envcat.test/")
    api.script = [httpx.ConnectError("refused", request=request) for _ in range(100)]
    result = invoke(api, clock)
    assert result.exit_code == 5
    assert "lost contact with the EnvCat server" in result.stderr
    assert max(clock.sleeps) == 8.0
    assert clock.sleeps[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_unreachable_server_exits_5(api: FakeApi, clock: FakeClock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse), base_url="http://envcat.test")
    result = CliRunner().invoke(cli, ["get"], obj=Runtime(client=client, clock=clock.clock()))
    assert result.exit_code == 5
    assert "cannot reach the EnvCat server at http://envcat.test: Connection refused" in (
        result.stderr
    )


def test_unreachable_real_port_exits_5_and_names_the_server(unused_port: int) -> None:
    server = f"http://127.0.0.1:{unused_port}"
    result = CliRunner().invoke(cli, ["get"], env={"ENVCAT_SERVER": server})
    assert result.exit_code == 5
    assert f"cannot reach the EnvCat server at {server}" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("where", ["create", "wait"])
def test_html_500_is_one_clear_line(api: FakeApi, clock: FakeClock, where: str) -> None:
    if where == "create":
        client = httpx.Client(
            transport=httpx.MockTransport(
                lambda request: httpx.Response(500, html="<h1>Internal Server Error</h1>")
            ),
            base_url="http://envcat.test",
        )
        runtime = Runtime(client=client, clock=clock.clock())
        result = CliRunner().invoke(cli, ["get"], obj=runtime)
    else:
        api.script = ["html500"]
        result = invoke(api, clock)
    assert result.exit_code == 1
    assert "HTTP 500 with a body that is not EnvCat JSON" in result.stderr
    assert "is http://envcat.test an EnvCat server?" in result.stderr
    assert result.stderr.count("\n") <= 12  # the approval text, then one error line
    assert "Traceback" not in result.output


def test_a_briefly_unavailable_server_is_retried_with_backoff(
    api: FakeApi, clock: FakeClock
) -> None:
    api.script = ["json502", "json502", "ready"]
    result = invoke(api, clock, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert clock.sleeps == [0.5, 1.0]
    assert "server unavailable (HTTP 502), retrying" in result.stderr


def test_a_busy_server_is_asked_again_after_its_retry_after(api: FakeApi, clock: FakeClock) -> None:
    api.busy_creates = 2
    result = invoke(api, clock, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert clock.sleeps[:2] == [5.0, 5.0]
    assert "EnvCat is busy; asking again in 5 s" in result.stderr
    assert len(api.calls_to("POST")) == 3


def test_a_server_that_stays_busy_exits_5_and_cannot_park_the_cli(
    api: FakeApi, clock: FakeClock
) -> None:
    api.busy_creates, api.busy_retry_after = 100, "86400"
    result = invoke(api, clock)
    assert result.exit_code == 5
    assert clock.sleeps == [30.0] * 5  # capped, six tries in all
    assert "(busy): EnvCat is busy" in result.stderr
    assert "Traceback" not in result.output


def test_a_server_unavailable_until_expiry_exits_5(api: FakeApi, clock: FakeClock) -> None:
    api.expires_in = 60
    api.script = ["json502" for _ in range(100)]
    result = invoke(api, clock)
    assert result.exit_code == 5
    assert "the server stayed unavailable (HTTP 502)" in result.stderr


def test_malformed_creation_reply_is_refused(clock: FakeClock) -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(201, json={"id": "x"})),
        base_url="http://envcat.test",
    )
    result = CliRunner().invoke(cli, ["get"], obj=Runtime(client=client, clock=clock.clock()))
    assert result.exit_code == 1
    assert "malformed (poll_token, user_code, verification_uri_complete)" in result.stderr


def test_rate_limited_creation_says_when_to_retry(clock: FakeClock) -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(
            lambda request: httpx.Response(429, headers={"Retry-After": "30"}, json={})
        ),
        base_url="http://envcat.test",
    )
    result = CliRunner().invoke(cli, ["get"], obj=Runtime(client=client, clock=clock.clock()))
    assert result.exit_code == 1
    assert "rate-limiting new requests; try again in 30 s" in result.stderr


def test_mismatching_user_code_is_refused_before_showing_the_url(
    api: FakeApi, clock: FakeClock
) -> None:
    api.wrong_user_code = True
    result = invoke(api, clock)
    assert result.exit_code == 1
    assert "verification phrase does not belong to this request" in result.stderr
    assert api.created["verification_uri_complete"] not in result.stderr
    assert api.calls_to("GET", "/wait") == []
    assert len(api.calls_to("DELETE")) == 1


def test_ciphertext_that_does_not_open_is_an_error(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["bad_ciphertext"]
    result = invoke(api, clock)
    assert result.exit_code == 6
    assert "does not open with this request's key" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("bad_key", ["BAD-KEY", "A;touch /tmp/x", "1ST", "", "A B", "ÉTÉ"])
def test_invalid_key_from_server_is_refused_and_never_printed(
    api: FakeApi, clock: FakeClock, bad_key: str
) -> None:
    api.values = {"GOOD": "1", bad_key: "x"}
    result = invoke(api, clock)
    assert result.exit_code == 1
    assert "not a valid variable name" in result.stderr
    assert result.stdout == ""


def test_docker_format_refuses_a_multiline_value(api: FakeApi, clock: FakeClock) -> None:
    api.values = {"PEM": "-----BEGIN-----\nabc\n-----END-----"}
    result = invoke(api, clock, "--format", "docker")
    assert result.exit_code == 1
    assert "refusing PEM in docker format" in result.stderr
    assert "BEGIN" not in result.output


def test_ctrl_c_cancels_the_request_and_exits_130(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["pending", KeyboardInterrupt()]
    result = invoke(api, clock)
    assert result.exit_code == 130
    assert result.stderr.endswith("Cancelled.\n")
    [delete] = api.calls_to("DELETE")
    assert delete.path == f"/api/v1/requests/{api.created['id']}"
    assert delete.headers["x-poll-token"] == api.created["poll_token"]


def test_write_creates_a_private_dotenv_file(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    api.values = VALUES
    target = tmp_path / ".env"
    result = invoke(api, clock, "--write", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert target.read_text(encoding="utf-8") == render(VALUES, "dotenv")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert f"Wrote 3 values from production/api to {target} (mode 0600)." in result.stderr
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".env")]
    assert left == [".env"]  # no temporary left behind


def test_write_replaces_a_readable_file_and_honours_format(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    target = tmp_path / "secrets.json"
    target.write_text("old")
    target.chmod(0o644)
    result = invoke(api, clock, "--write", str(target), "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(target.read_text()) == api.values
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_write_into_a_missing_directory_fails_before_asking(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    result = invoke(api, clock, "--write", str(tmp_path / "nope" / ".env"))
    assert result.exit_code == 2
    assert api.calls == []


def test_interactive_terminal_shows_qr_and_spinner(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, interactive=True)
    assert result.exit_code == 0, result.stderr
    assert "█" in result.stderr or "▀" in result.stderr
    assert f"\x1b[1m{api.created['user_code']}\x1b[0m" in result.stderr


def test_no_qr_suppresses_the_code(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, "--no-qr", interactive=True)
    assert "█" not in result.stderr and "▀" not in result.stderr


def test_non_terminal_stderr_gets_plain_lines(api: FakeApi, clock: FakeClock) -> None:
    api.script = ["pending", "ready"]
    result = invoke(api, clock)
    assert "█" not in result.stderr
    assert "\x1b" not in result.stderr
    assert result.stderr.count("Waiting for approval…") == 1


def test_write_refuses_a_symlink_before_asking(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    real = tmp_path / "bashrc"
    real.write_text("old")
    link = tmp_path / ".env"
    link.symlink_to(real)
    result = invoke(api, clock, "--write", str(link))
    assert result.exit_code == 2
    assert "is a symbolic link; refusing to write through it" in result.stderr
    assert api.calls == []
    assert link.is_symlink()
    assert real.read_text() == "old"


def test_write_refuses_a_symlink_made_while_waiting(tmp_path: Path) -> None:
    from envcat.cli.errors import CliError
    from envcat.cli.output import write_private_file

    real = tmp_path / "bashrc"
    real.write_text("old")
    link = tmp_path / ".env"
    link.symlink_to(real)  # as if planted after the option was checked
    with pytest.raises(CliError, match="symbolic link"):
        write_private_file(link, "A=1\n")
    assert real.read_text() == "old"
    assert link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if "env" in p.name) == [".env"]


def test_write_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    from envcat.cli.errors import CliError
    from envcat.cli.output import write_private_file

    link = tmp_path / ".env"
    link.symlink_to(tmp_path / "would-be-created")
    with pytest.raises(CliError, match="symbolic link"):
        write_private_file(link, "A=1\n")
    assert not (tmp_path / "would-be-created").exists()


def test_write_refuses_a_device_before_asking(api: FakeApi, clock: FakeClock) -> None:
    result = invoke(api, clock, "--write", "/dev/null")
    assert result.exit_code == 2
    assert "/dev/null exists and is not a regular file" in result.stderr
    assert api.calls == []
