"""`--format github` and the ID-token sources of `--oidc` (issue #16).

The $GITHUB_ENV text is read back with a parser that follows the runner's rules
(`NAME<<DELIMITER` … `DELIMITER`, or `NAME=value`), so a hostile value that tries to end
its entry early and set another variable is caught by what the runner would do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from envcat.cli.errors import CliError
from envcat.cli.formats import FormatError
from envcat.cli.github import append_github_env, github_env_text, mask_commands
from envcat.cli.oidc import obtain_id_token
from tests.support import free_port, serve_in_background
from tests.support.github import parse_github_env

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln"
HOSTILE = {
    "MULTI": "line one\nline two\n",
    "INJECT": "x\nghadelimiter_0\nLD_PRELOAD=/tmp/evil.so\nPATH<<EOF\n/evil\nEOF",
    "PERCENT": "100%0A done\r\nend",
    "QUOTES": 'it\'s "$HOME" `id`',
    "EMPTY": "",
}


def test_hostile_values_round_trip_through_the_runners_parser() -> None:
    predictable = iter(["0", "0", "1", "2", "3", "4", "5", "6"])
    text = github_env_text(HOSTILE, token=lambda: next(predictable))
    assert parse_github_env(text) == HOSTILE
    # the guessed delimiter inside INJECT was skipped, not used
    assert "INJECT<<ghadelimiter_0\n" not in text


def test_random_delimiters_differ_per_value() -> None:
    text = github_env_text({"A": "1", "B": "2"})
    delimiters = [line.split("<<", 1)[1] for line in text.splitlines() if "<<" in line]
    assert len(set(delimiters)) == 2 and all(len(d) > 20 for d in delimiters)


def test_every_value_line_is_masked_and_command_data_escaped() -> None:
    masks = mask_commands(HOSTILE).splitlines()
    assert "::add-mask::line one" in masks and "::add-mask::line two" in masks
    assert "::add-mask::100%250A done" in masks and "::add-mask::end" in masks
    assert "::add-mask::LD_PRELOAD=/tmp/evil.so" in masks
    assert all(line.startswith("::add-mask::") for line in masks)
    assert "::add-mask::" not in masks  # an empty line is not a mask (it would mask nothing)


@pytest.mark.parametrize("name", ["GITHUB_PATH", "RUNNER_TEMP", "NODE_OPTIONS", "ACTIONS_X"])
def test_names_that_steer_the_runner_are_refused(name: str) -> None:
    with pytest.raises(FormatError, match=name):
        github_env_text({"OK": "1", name: "x"})


def test_invalid_names_are_refused() -> None:
    with pytest.raises(FormatError, match="not a valid variable name"):
        github_env_text({"A<<B": "x"})


def test_appending_keeps_what_earlier_steps_wrote(tmp_path: Path) -> None:
    target = tmp_path / "github_env"
    target.write_text("EARLIER=1\n")
    append_github_env(target, github_env_text({"LATER": "2\n3"}))
    assert parse_github_env(target.read_text()) == {"EARLIER": "1", "LATER": "2\n3"}


def test_a_symlinked_github_env_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "github_env").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        append_github_env(tmp_path / "github_env", "A<<D\n1\nD\n")
    assert (tmp_path / "elsewhere").read_text() == ""


# ---- where the ID token comes from ------------------------------------------------------


class TokenService:
    """A stand-in for GitHub's ID-token service (it lives outside this machine)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[dict[str, Any]] = []
        self.reply: tuple[int, dict[str, Any]] = (200, {"value": TOKEN})
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                service.seen.append(
                    {"query": query, "authorization": self.headers.get("Authorization")}
                )
                status, body = service.reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        serve_in_background(self.server)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token?api-version=2.0"


@pytest.fixture
def token_service() -> Iterator[TokenService]:
    service = TokenService()
    yield service
    service.server.shutdown()
    service.server.server_close()


def test_github_token_service_is_asked_with_bearer_and_audience(
    token_service: TokenService,
) -> None:
    environ = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": token_service.url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-bearer",
    }
    assert obtain_id_token(environ, "https://envcat.example", None) == TOKEN
    [call] = token_service.seen
    assert call["authorization"] == "bearer runner-bearer"
    assert call["query"] == {"api-version": ["2.0"], "audience": ["https://envcat.example"]}


def test_a_refusing_token_service_names_the_missing_permission(
    token_service: TokenService,
) -> None:
    token_service.reply = (403, {"message": "no"})
    environ = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": token_service.url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-bearer",
    }
    with pytest.raises(CliError, match="id-token: write"):
        obtain_id_token(environ, "aud", None)


def test_file_then_environment_then_github(tmp_path: Path, token_service: TokenService) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    environ = {
        "ENVCAT_ID_TOKEN": "a.b.c",
        "ACTIONS_ID_TOKEN_REQUEST_URL": token_service.url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "x",
    }
    assert obtain_id_token(environ, "aud", token_file) == TOKEN
    assert obtain_id_token(environ, "aud", None) == "a.b.c"
    assert token_service.seen == []


def test_no_token_anywhere_is_a_clear_error() -> None:
    with pytest.raises(CliError, match="--oidc needs an ID token"):
        obtain_id_token({}, "aud", None)


def test_a_token_that_is_not_a_jwt_is_refused_without_echoing_it() -> None:
    with pytest.raises(CliError) as caught:
        obtain_id_token({"ENVCAT_ID_TOKEN": "not-a-token-secret"}, "aud", None)
    assert "not a JWT" in str(caught.value) and "not-a-token-secret" not in str(caught.value)
