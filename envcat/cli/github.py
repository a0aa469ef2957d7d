"""`envcat get --format github`: hand values to later steps of a GitHub Actions job.

Each value is appended to the file `$GITHUB_ENV` names, in the runner's multi-line
form (`NAME<<DELIMITER`, the value, `DELIMITER`) with a random delimiter that occurs
on no line of the value, so no value can end its entry early and set another variable.
Before that, one `::add-mask::` workflow command per value line goes to stdout, so the
runner masks each line in every later log. Nothing else is printed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from envcat.cli.formats import FormatError, validate_values

# The runner refuses NODE_OPTIONS from GITHUB_ENV; GITHUB_*/RUNNER_*/ACTIONS_* steer the
# runner and its actions: a delivered value must not redefine them.
RESERVED_PREFIXES = ("GITHUB_", "RUNNER_", "ACTIONS_")
RESERVED_NAMES = frozenset({"NODE_OPTIONS", "CI"})


def _escape_command_data(text: str) -> str:
    # as @actions/core escapes a workflow command's data
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def mask_commands(values: Mapping[str, str]) -> str:
    """`::add-mask::` lines for every non-blank line of every value."""
    lines: list[str] = []
    for value in values.values():
        for line in value.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            if line.strip():
                lines.append(f"::add-mask::{_escape_command_data(line)}\n")
    return "".join(dict.fromkeys(lines))


def _delimiter(value: str, token: Callable[[], str]) -> str:
    while True:
        delimiter = f"ghadelimiter_{token()}"
        if delimiter not in value:
            return delimiter


def github_env_text(
    values: Mapping[str, str], token: Callable[[], str] = lambda: secrets.token_hex(16)
) -> str:
    """The `$GITHUB_ENV` entries for `values`; FormatError for a name it must not set."""
    validate_values(values)
    for name in values:
        if name.upper() in RESERVED_NAMES or name.upper().startswith(RESERVED_PREFIXES):
            raise FormatError(
                f"refusing {name} in github format: the runner or its actions read it"
            )
    entries = []
    for name, value in values.items():
        delimiter = _delimiter(value, token)
        entries.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(entries)


def append_github_env(path: Path, text: str) -> None:
    """Append to the `$GITHUB_ENV` file (never through a symlink)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8", newline="") as stream:
        stream.write(text)
