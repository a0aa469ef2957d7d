"""The approval statement a passkey signs (issue #20), shared by the server and the CLI.

An approver's passkey does not sign "yes": it signs a statement of exactly what
is approved, and the WebAuthn challenge is the SHA-256 of that statement's
canonical JSON (sorted keys, no whitespace, UTF-8). The server builds it for the
approval page; the CLI rebuilds it from what it asked (request id, its public
key, workspace slug, the phrase it showed) and what it received (bundle id, the
names actually delivered, `decided_at`), so a statement about anything else
does not match the signed challenge. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STATEMENT_FIELDS = (
    "request_id",
    "cli_public_key",
    "workspace",
    "bundle_id",
    "keys",
    "user_code",
    "decided_at",
)


class StatementError(ValueError):
    """A statement is not of the expected shape."""


@dataclass(frozen=True)
class ApprovalStatement:
    """What an approver's passkey signs; `keys` are exported names, kept sorted."""

    request_id: str
    cli_public_key: str
    workspace: str  # the slug: the CLI knows the slug, not the tenant id
    bundle_id: str
    keys: tuple[str, ...]
    user_code: str
    decided_at: int  # unix seconds, an integer so both sides write it alike

    @classmethod
    def of(
        cls,
        *,
        request_id: str,
        cli_public_key: str,
        workspace: str,
        bundle_id: str,
        keys: Iterable[str],
        user_code: str,
        decided_at: int,
    ) -> ApprovalStatement:
        """Build a statement; the key names are sorted here, whatever order they come in."""
        return cls(
            request_id=request_id,
            cli_public_key=cli_public_key,
            workspace=workspace,
            bundle_id=bundle_id,
            keys=tuple(sorted(keys)),
            user_code=user_code,
            decided_at=int(decided_at),
        )

    def as_dict(self) -> dict[str, Any]:
        """The statement as a JSON object."""
        return {
            "request_id": self.request_id,
            "cli_public_key": self.cli_public_key,
            "workspace": self.workspace,
            "bundle_id": self.bundle_id,
            "keys": sorted(self.keys),
            "user_code": self.user_code,
            "decided_at": self.decided_at,
        }

    def canonical(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, UTF-8."""
        return json.dumps(
            self.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    def challenge(self) -> bytes:
        """The WebAuthn challenge: SHA-256 of the canonical form (32 bytes)."""
        return hashlib.sha256(self.canonical()).digest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApprovalStatement:
        """Parse a statement object strictly: exactly the seven fields, of the right types."""
        if set(data) != set(STATEMENT_FIELDS):
            raise StatementError("the approval statement has missing or extra fields")
        texts = ("request_id", "cli_public_key", "workspace", "bundle_id", "user_code")
        if not all(isinstance(data[name], str) for name in texts):
            raise StatementError("the approval statement has a field that is not text")
        keys, decided_at = data["keys"], data["decided_at"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise StatementError("the approval statement's keys are not a list of names")
        if keys != sorted(set(keys)):
            raise StatementError("the approval statement's keys are not sorted and distinct")
        if not isinstance(decided_at, int) or isinstance(decided_at, bool):
            raise StatementError("the approval statement's decided_at is not an integer")
        return cls.of(
            request_id=data["request_id"],
            cli_public_key=data["cli_public_key"],
            workspace=data["workspace"],
            bundle_id=data["bundle_id"],
            keys=keys,
            user_code=data["user_code"],
            decided_at=decided_at,
        )
