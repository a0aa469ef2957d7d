"""What every provider client offers the sync engine, and the errors it raises.

Error messages name secrets and provider error codes, never a value or a credential.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# AWS SecretString and GCP payloads both stop at 64 KiB.
MAX_REMOTE_VALUE_BYTES = 64 * 1024


class ProviderError(Exception):
    """A provider call failed in a way a retry will not fix (a bad name, a refused write)."""


class CredentialsRejected(ProviderError):
    """The provider refused the credentials: wrong, expired or without permission."""


class Throttled(ProviderError):
    """The provider kept answering 429/ThrottlingException after our backoff."""


class Unreachable(ProviderError):
    """The provider could not be reached (connection refused, timeout): transient."""


@dataclass(frozen=True)
class RemoteValue:
    """A provider secret's current value and the version that holds it."""

    value: str
    version: str
    changed_at: datetime | None


class SecretStore(Protocol):
    """One connection's view of a provider, every call through the shared rate limiter."""

    def check(self) -> None:
        """One cheap read: raise CredentialsRejected/Unreachable when it fails."""

    def snapshot(self, prefix: str | None, names: Iterable[str]) -> dict[str, RemoteValue]:
        """Current values of every secret under `prefix` (None: list nothing, "": all)
        plus `names`; missing and binary secrets are left out."""

    def write(self, name: str, value: str, *, exists: bool, token: str) -> str:
        """Make `value` the current version of `name`; return the new version id.

        `token` is an idempotency token: the same (name, token) twice writes once.
        """

    def changed_at(self, name: str) -> datetime | None:
        """When `name`'s current version was written (for two-way conflicts)."""
