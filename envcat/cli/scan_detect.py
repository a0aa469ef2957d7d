"""Finding secrets in lines (issue #19): detect-secrets' plugins, and candidates for the server.

`detect` runs detect-secrets' line plugins with its default filters. `candidates`
extracts the strings that could be one of the workspace's values: quoted strings,
whitespace-separated tokens, and the value after each `=` or `:`; only those of at
least MIN_CANDIDATE_CHARS characters are kept, because the server fingerprints no
shorter value and a short string's SHA-256 is easy to invert. A finding holds a masked
form (first two characters and the length) and never the secret itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from envcat.cli.scan_sources import Chunk

MIN_CANDIDATE_CHARS = 12  # the server's MIN_VALUE_LENGTH
MAX_CANDIDATES_PER_LINE = 64
OWN_VALUE_RULE = "envcat.workspace-value"
_QUOTED = re.compile(r"\"([^\"\n]+)\"|'([^'\n]+)'|`([^`\n]+)`")
_TOKEN = re.compile(r"[^\s\"'`]+")
_AFTER_SEPARATOR = re.compile(r"[=:]\s*([^\s\"'`]+)")
_TRIM = ",;"


def mask(secret: str) -> str:
    """The shown form of a secret: its first two characters and its length."""
    return f"{secret[:2]}… ({len(secret)} chars)"


def rule_id(detector: str) -> str:
    """The rule id of a detect-secrets type: "AWS Access Key" -> detect-secrets.aws-access-key."""
    return "detect-secrets." + re.sub(r"[^a-z0-9]+", "-", detector.lower()).strip("-")


@dataclass(frozen=True)
class Finding:
    """One likely secret at one place; `key` names the workspace key for own-value matches."""

    rule: str
    detector: str
    path: str
    line: int
    commit: str | None
    masked: str
    key: str | None = None


def detect(chunk: Chunk) -> Iterator[Finding]:
    """detect-secrets' findings in one chunk (its default plugins and filters)."""
    from detect_secrets.core.scan import _process_line_based_plugins
    from detect_secrets.settings import default_settings

    with default_settings():
        for found in _process_line_based_plugins(chunk.lines, chunk.path):
            secret = str(found.secret_value or "")
            yield Finding(
                rule_id(found.type),
                found.type,
                chunk.path,
                found.line_number,
                chunk.commit,
                mask(secret),
            )


def _line_candidates(line: str) -> set[str]:
    found: set[str] = set()
    for match in _QUOTED.finditer(line):
        found.add(next(group for group in match.groups() if group is not None))
    for match in _TOKEN.finditer(line):
        found.add(match.group(0).strip(_TRIM))
    for match in _AFTER_SEPARATOR.finditer(line):
        found.add(match.group(1).strip(_TRIM))
    stripped = line.strip()
    if "=" in stripped:  # KEY=value with spaces, the rest of the line
        found.add(stripped.split("=", 1)[1].strip().strip("\"'").strip())
    return {c for c in found if len(c) >= MIN_CANDIDATE_CHARS}


@dataclass(frozen=True)
class Place:
    """Where a candidate string was seen, with its masked form."""

    path: str
    line: int
    commit: str | None
    masked: str


def candidates(chunk: Chunk) -> Iterator[tuple[str, Place]]:
    """(SHA-256 hex, place) of each candidate string of the chunk."""
    for number, line in chunk.lines:
        for text in sorted(_line_candidates(line))[:MAX_CANDIDATES_PER_LINE]:
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            yield digest, Place(chunk.path, number, chunk.commit, mask(text))
