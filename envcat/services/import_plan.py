"""What an import would do to each name (issue #15): the plan the import applies and the
preview shows. Pure: the caller loads the library, the bundle's entries and its exported
names, so a preview and the real import classify every name the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from envcat.models import Key

Outcome = Literal["new", "attach", "changed", "unchanged", "clash"]


@dataclass(frozen=True)
class Planned:
    """One name of the file: `new` (no such key), `attach` (a library key with this value,
    not in the bundle), `changed`/`unchanged` (compared with the stored value, server-side),
    `clash` (another key is exported under this name here)."""

    name: str
    outcome: Outcome
    key: Key | None


def plan(
    values: dict[str, str],
    library: dict[str, Key],
    attached: set[str],
    exported: set[str],
    decrypt: Callable[[Key], str],
) -> list[Planned]:
    """Classify each name of the file, in file order."""
    planned = []
    for name, value in values.items():
        key = library.get(name)
        outcome: Outcome
        if (key is None or key.id not in attached) and name in exported:
            outcome = "clash"
        elif key is None:
            outcome = "new"
        elif decrypt(key) == value:
            outcome = "unchanged" if key.id in attached else "attach"
        else:
            outcome = "changed"
        planned.append(Planned(name, outcome, key))
    return planned
