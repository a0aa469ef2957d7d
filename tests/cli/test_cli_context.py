"""The request context: credentials never leave the machine in a git remote."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from envcat import __version__
from envcat.cli.context import git_remote, request_context, strip_url_credentials
from envcat.cli.flow import backoff_delays


@pytest.mark.parametrize(
    ("remote", "sent"),
    [
        ("https://user:ghp_token@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://ghp_token@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("http://u:p@host:8080/r.git", "http://host:8080/r.git"),
        ("ssh://git:secret@host/r.git", "ssh://git@host/r.git"),
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
    ],
)
def test_strip_url_credentials(remote: str, sent: str) -> None:
    assert strip_url_credentials(remote) == sent


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def test_git_remote_is_read_and_stripped(repo: Path) -> None:
    url = "https://bob:hunter2@git.example/team/app.git"
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", url], check=True)
    assert git_remote(str(repo)) == "https://git.example/team/app.git"


def test_git_remote_is_none_without_origin(repo: Path) -> None:
    assert git_remote(str(repo)) is None


def test_git_remote_is_none_outside_a_repository(tmp_path: Path) -> None:
    assert git_remote(str(tmp_path)) is None


def test_request_context_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    context = request_context(["envcat", "get", "it's here"])
    assert context["cwd"] == str(tmp_path)
    assert context["command"] == "envcat get 'it'\"'\"'s here'"
    assert context["client"] == f"envcat/{__version__}"
    assert context["git_remote"] is None
    assert context["hostname"]


def test_backoff_doubles_from_half_a_second_to_eight() -> None:
    delays = backoff_delays()
    assert [next(delays) for _ in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
