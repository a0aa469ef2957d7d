"""The request context shown to the approver: where and why the values are asked for."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from envcat import __version__

CLIENT = f"envcat/{__version__}"
_FIELD_LIMIT = 1024
_GIT_TIMEOUT_SECONDS = 2.0
# schemes whose user part is commonly a token (https://<token>@github.com/…)
_TOKEN_USER_SCHEMES = frozenset({"http", "https", "ftp", "ftps"})


def strip_url_credentials(url: str) -> str:
    """Return a remote URL without secrets: no password, and no user for http(s).

    scp-style remotes (`git@host:org/repo.git`) carry no secret and pass unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    if parts.scheme.lower() in _TOKEN_USER_SCHEMES or not user:
        netloc = hostport
    else:
        netloc = f"{user}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def git_remote(cwd: str) -> str | None:
    """Return `remote.origin.url` of the repository at `cwd`, credentials stripped."""
    git = shutil.which("git")
    if git is None or not cwd:
        return None
    try:
        # fixed argv, no shell; the prompt is disabled so a broken config cannot block us
        result = subprocess.run(  # noqa: S603
            [git, "config", "--get", "remote.origin.url"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    remote = result.stdout.strip()
    if result.returncode != 0 or not remote:
        return None
    return strip_url_credentials(remote)[:_FIELD_LIMIT] or None


def _current_directory() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed under us
        return ""


def request_context(command: Sequence[str]) -> dict[str, str | None]:
    """Return the `context` object of DESIGN.md §5 for a request made for `command`."""
    cwd = _current_directory()
    return {
        "hostname": socket.gethostname()[:_FIELD_LIMIT],
        "cwd": cwd[:_FIELD_LIMIT],
        "command": shlex.join(command)[:_FIELD_LIMIT],
        "git_remote": git_remote(cwd),
        "client": CLIENT,
    }
