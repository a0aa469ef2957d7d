""".env and JSON import/export formats, read with python-dotenv's own parser.

Parsing: `dotenv_values` on a StringIO with `interpolate=False`, so quotes,
escapes, multi-line double-quoted values, `export ` prefixes, comments and blank
lines mean exactly what they mean to python-dotenv, and `${X}` stays literal.

Serialising: every value is double-quoted with only four escapes — `\\\\`, `\\"`,
`\\n` and `\\r` — which python-dotenv decodes back to the same characters. Any
other character (tab, `$`, `#`, `'`, unicode) is literal inside double quotes,
so export → import (or → `dotenv_values(interpolate=False)`) is byte-exact.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from envcat.core.schemas.bundles import is_valid_key_name, value_problem
from envcat.services.errors import ValidationFailed

MAX_IMPORT_KEYS = 1000
_DOUBLE_QUOTE_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


@dataclass
class Parsed:
    """Valid names with their values (file order), and the names that cannot be imported."""

    values: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def parse_dotenv(content: str) -> dict[str, str | None]:
    """Parse .env text as python-dotenv does, without interpolation.

    A line python-dotenv cannot parse (e.g. an unterminated quote) is a 400
    naming its line number: python-dotenv would silently drop it.
    """
    bad_lines = [b.original.line for b in parse_stream(io.StringIO(content)) if b.error]
    if bad_lines:
        listed = ", ".join(str(n) for n in bad_lines[:20])
        raise ValidationFailed(
            f"The .env content could not be parsed at line {listed}.",
            details=[{"loc": ["content"], "line": n, "type": "dotenv_syntax"} for n in bad_lines],
        )
    return dotenv_values(stream=io.StringIO(content), interpolate=False)


def parse_json(content: str) -> dict[str, object]:
    """Parse a JSON object; anything else is a 400."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        raise ValidationFailed("The JSON content is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ValidationFailed("The JSON content must be an object of names to string values.")
    return data


def parse(fmt: str, content: str) -> Parsed:
    """Split imported content into importable values and skipped names.

    Invalid names, and .env names without `=`, are skipped. For a valid name, a
    value that is not a string, too long or holds a NUL fails the whole import
    (400 naming the key), so nothing is half-applied.
    """
    raw: Mapping[str, object] = parse_dotenv(content) if fmt == "dotenv" else parse_json(content)
    parsed = Parsed()
    problems: dict[str, str] = {}
    for name, value in raw.items():
        if not is_valid_key_name(name) or (fmt == "dotenv" and value is None):
            parsed.skipped.append(name)
        elif not isinstance(value, str):
            problems[name] = "must be a string"
        elif problem := value_problem(value):
            problems[name] = problem
        else:
            parsed.values[name] = value
    if problems:
        raise ValidationFailed(
            f"Nothing was imported: bad value for {', '.join(list(problems)[:10])}.",
            details=[{"loc": ["content", n], "msg": m} for n, m in problems.items()],
        )
    if len(parsed.values) > MAX_IMPORT_KEYS:
        raise ValidationFailed(f"At most {MAX_IMPORT_KEYS} keys can be imported at once.")
    return parsed


def quote(value: str) -> str:
    """Return `value` double-quoted for python-dotenv (\\\\ \\" \\n \\r escaped)."""
    return '"' + value.translate(_DOUBLE_QUOTE_ESCAPES) + '"'


def serialise_dotenv(values: Mapping[str, str]) -> str:
    """Render `NAME="value"` lines in the mapping's order; names must already be valid."""
    return "".join(f"{name}={quote(value)}\n" for name, value in values.items())


def serialise_json(values: Mapping[str, str]) -> str:
    """Render one JSON object (UTF-8 text, not \\u-escaped), in the mapping's order."""
    return json.dumps(dict(values), ensure_ascii=False, indent=2) + "\n"
