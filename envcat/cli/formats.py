"""Render a delivered mapping as shell, dotenv, JSON or Docker env-file text.

Pure functions, one engine for every output: `render(values, fmt)` validates
first and returns the whole text, so nothing is printed when any entry is
refused. The quoting rules follow the parsers that read the output back; see
docs/cli.md ("Formats") for what each format is safe for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from envcat.core.wire import KEY_NAME_RE

FORMATS = ("sh", "fish", "dotenv", "json", "docker")

# python-dotenv expands ${NAME} and ${NAME:-default} in every kind of value
# (quoted or not, after unescaping) and has no escape for it.
_DOTENV_EXPANSION = re.compile(r"\$\{[^}:]*(?::-[^}]*)?\}")
_DOTENV_DOUBLE_QUOTE_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


class FormatError(ValueError):
    """A mapping cannot be rendered safely; the message names the key, never the value."""


def is_valid_name(name: str) -> bool:
    """Return whether `name` is a portable environment-variable name."""
    return KEY_NAME_RE.fullmatch(name) is not None


def validate_values(values: Mapping[str, str]) -> None:
    """Raise FormatError unless every name is valid and every value is env-safe text."""
    for name, value in values.items():
        if not is_valid_name(name):
            raise FormatError(f"refusing the key {ascii(name)[:60]}: not a valid variable name")
        if "\x00" in value:
            raise FormatError(f"refusing {name}: its value contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError(f"refusing {name}: its value is not valid Unicode text") from None


def quote_sh(value: str) -> str:
    """Return `value` as one POSIX single-quoted word (bash, dash, zsh, ksh)."""
    return "'" + value.replace("'", "'\\''") + "'"


def quote_fish(value: str) -> str:
    """Return `value` as one fish single-quoted word (only \\\\ and \\' are escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_dotenv(name: str, value: str) -> str:
    """Return `value` quoted for python-dotenv and Docker Compose.

    A value with `$` is single-quoted when it can be (no `'`, `\\` or carriage
    return): both parsers read single quotes literally. Otherwise double quotes
    with \\\\, \\", \\n and \\r escapes, which both parsers decode alike.
    """
    if _DOTENV_EXPANSION.search(value):
        raise FormatError(
            f"refusing {name} in dotenv: its value contains ${{…}}, which python-dotenv "
            "always expands and cannot escape; use --format json, sh or fish"
        )
    if "$" in value and not any(char in value for char in "'\\\r"):
        return "'" + value + "'"
    return '"' + value.translate(_DOTENV_DOUBLE_QUOTE_ESCAPES) + '"'


def _docker_value(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise FormatError(
            f"refusing {name} in docker format: its value has a line break, which "
            "docker run --env-file cannot carry; use --format dotenv with Compose instead"
        )
    return value


def _lines(values: Mapping[str, str], line: Callable[[str, str], str]) -> str:
    return "".join(line(name, value) + "\n" for name, value in values.items())


def render(values: Mapping[str, str], fmt: str) -> str:
    """Return the whole output for `values` in format `fmt`, in the mapping's order."""
    validate_values(values)
    if fmt == "sh":
        return _lines(values, lambda name, value: f"export {name}={quote_sh(value)}")
    if fmt == "fish":
        return _lines(values, lambda name, value: f"set -gx {name} {quote_fish(value)}")
    if fmt == "dotenv":
        return _lines(values, lambda name, value: f"{name}={quote_dotenv(name, value)}")
    if fmt == "docker":
        return _lines(values, lambda name, value: f"{name}={_docker_value(name, value)}")
    if fmt == "json":
        return json.dumps(dict(values), ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
