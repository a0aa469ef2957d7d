"""Workspace slug → tenant, remembered for a few seconds per process (issue #14).

Every request creation names its workspace by slug, and reading it was a quarter of
the api's CPU per create. A live slug is remembered for `SLUG_CACHE_SECONDS`; a slug
that resolves to nothing is never remembered (a workspace made a moment ago answers at
once). This process forgets a slug when it renames or deletes that workspace; another
process (a worker applying a Clerk deletion, a second api) may keep resolving it for
at most those seconds. That is harmless: a request is only a question, and approving
it still checks the approver's membership and the bundle in the tenant the request
was stored for, while delivery re-reads everything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SLUG_CACHE_SECONDS = 5.0
MAX_SLUGS = 10_000  # then start again: bounded memory whatever callers send


class SlugCache:
    """slug → tenant id for live workspaces, each kept SLUG_CACHE_SECONDS."""

    def __init__(
        self,
        seconds: float = SLUG_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self._entries: dict[str, tuple[str, float]] = {}  # slug → (tenant id, when)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, slug: str) -> str | None:
        """The remembered tenant id, or None when unknown or too old."""
        entry = self._entries.get(slug)
        if entry is None or self._clock() - entry[1] >= self._seconds:
            return None
        return entry[0]

    def put(self, slug: str, tenant_id: str) -> None:
        """Remember a slug that just resolved to a live tenant."""
        with self._lock:
            if len(self._entries) >= MAX_SLUGS:
                self._entries.clear()
            self._entries[slug] = (tenant_id, self._clock())

    def forget(self, *slugs: str) -> None:
        """Drop slugs this process renamed or deleted: the next lookup reads the database."""
        with self._lock:
            for slug in slugs:
                self._entries.pop(slug, None)

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop every slug of a tenant (a deleted workspace)."""
        with self._lock:
            for slug in [s for s, entry in self._entries.items() if entry[0] == tenant_id]:
                del self._entries[slug]
