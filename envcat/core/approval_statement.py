"""The approval statement a passkey signs (issue #20), shared by the server and the CLI.

An approver's passkey does not sign "yes": it signs a statement of exactly what
is approved, and the WebAuthn challenge is the SHA-256 of that statement's
canonical JSON (sorted keys, no whitespace, UTF-8). The server builds it for the
approval page; the CLI rebuilds it from what it asked (request id, its public
key, workspace slug, the phrase it showed) and what it received (bundle id, the
names actually delivered, `decided_at`), so a statement about anything else
does not match the signed challenge. An owner's break-glass release (issue #17)
adds `break_glass`, the owner's reason, so the passkey signs the reason and the
fact that it is a break-glass release; an ordinary approval's statement has no
such field, and its canonical form is what it always was. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import re
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
BREAK_GLASS_FIELD = "break_glass"  # present only in a break-glass release's statement
# The break-glass reason's rule, one source for the api's schema and this parser:
# one line (it is printed in terminals and notices), at most 500 characters.
BREAK_GLASS_REASON_MAX = 500
BREAK_GLASS_REASON_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class StatementError(ValueError):
    """A statement is not of the expected shape."""


def check_reason(value: object) -> str:
    """The break-glass reason as given, if it is one non-blank line of at most 500 characters.

    StatementError otherwise; the message never repeats the text.
    """
    if not isinstance(value, str) or not value.strip():
        raise StatementError("the break-glass reason is empty or not text")
    if len(value) > BREAK_GLASS_REASON_MAX:
        raise StatementError(
            f"the break-glass reason is longer than {BREAK_GLASS_REASON_MAX} characters"
        )
    if re.fullmatch(BREAK_GLASS_REASON_PATTERN, value) is None:
        raise StatementError("the break-glass reason is not one line of printable text")
    return value


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
    break_glass: str = ""  # issue #17: the owner's reason; "" for an ordinary approval

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
        break_glass: str = "",
    ) -> ApprovalStatement:
        """Build a statement; the key names are sorted here, whatever order they come in.

        `break_glass` is the owner's reason for a break-glass release, "" otherwise.
        """
        return cls(
            request_id=request_id,
            cli_public_key=cli_public_key,
            workspace=workspace,
            bundle_id=bundle_id,
            keys=tuple(sorted(keys)),
            user_code=user_code,
            decided_at=int(decided_at),
            break_glass=break_glass,
        )

    def as_dict(self) -> dict[str, Any]:
        """The statement as a JSON object; `break_glass` only when it is one."""
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "cli_public_key": self.cli_public_key,
            "workspace": self.workspace,
            "bundle_id": self.bundle_id,
            "keys": sorted(self.keys),
            "user_code": self.user_code,
            "decided_at": self.decided_at,
        }
        if self.break_glass:  # absent otherwise: ordinary statements keep their bytes
            data[BREAK_GLASS_FIELD] = self.break_glass
        return data

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
        """Parse a statement object strictly: exactly the seven fields, of the right types.

        A break-glass release's statement has an eighth, `break_glass`: the reason,
        one non-blank line of at most 500 characters.
        """
        given = set(data)
        if given != set(STATEMENT_FIELDS) and given != {*STATEMENT_FIELDS, BREAK_GLASS_FIELD}:
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
        reason = check_reason(data[BREAK_GLASS_FIELD]) if BREAK_GLASS_FIELD in given else ""
        return cls.of(
            request_id=data["request_id"],
            cli_public_key=data["cli_public_key"],
            workspace=data["workspace"],
            bundle_id=data["bundle_id"],
            keys=keys,
            user_code=data["user_code"],
            decided_at=decided_at,
            break_glass=reason,
        )
