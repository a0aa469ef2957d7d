"""Wire models of secret scanning (issue #19): `/api/v1/scan/matches` and `/api/v1/scan/leaks`.

A scanner sends the SHA-256 of its candidate strings, never the strings; the server
answers key names only. Validation messages never quote the rejected input.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from envcat.core.schemas.requests import WorkspaceSlug
from envcat.core.schemas.workloads import RuleValue

MAX_HASHES = 10000  # the server's SCAN_BATCH_MAX (default 1000) caps it further
MAX_LEAKS = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")


def _sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError("must be a SHA-256 in lowercase hex (64 characters)")
    return value


def _commit(value: str) -> str:
    if not _COMMIT.fullmatch(value):
        raise ValueError("must be a git commit id in lowercase hex")
    return value


Sha256Hex = Annotated[str, AfterValidator(_sha256)]
CommitId = Annotated[str, AfterValidator(_commit)]
FilePath = RuleValue  # non-empty printable text, at most 500 characters


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScanMatchQuery(_Body):
    """POST /scan/matches: which of these hashes are the workspace's values?"""

    workspace: WorkspaceSlug
    hashes: Annotated[list[Sha256Hex], Field(min_length=1, max_length=MAX_HASHES)]


class ScanMatch(BaseModel):
    """One submitted hash that is a current or kept value of these keys."""

    sha256: str
    keys: list[str]


class ScanMatches(BaseModel):
    """200 to POST /scan/matches: only the submitted hashes that matched, with key names."""

    matches: list[ScanMatch]


class LeakLocation(_Body):
    """Where a matched value was found: file, line and (in history) commit."""

    sha256: Sha256Hex
    path: FilePath
    line: Annotated[int, Field(ge=1)]
    commit: CommitId | None = None


class LeakReport(_Body):
    """POST /scan/leaks: confirmed leaks to alert on; the server re-checks each hash."""

    workspace: WorkspaceSlug
    leaks: Annotated[list[LeakLocation], Field(min_length=1, max_length=MAX_LEAKS)]


class LeaksAlerted(BaseModel):
    """200 to POST /scan/leaks: how many new alerts were raised, for which keys."""

    alerted: int
    keys: list[str]
