"""Name-ordered pages of a tenant's bundles or keys (issue #15): search, limit, cursor.

Rows are ordered case-insensitively by name, then by the exact name (names are
unique per tenant), the order the lists always had. The cursor is the last name
of a page, opaque to callers (base64url); the next page starts after it, so a
row added or removed meanwhile shifts nothing. PostgreSQL compares with the "C"
collation, so its order is SQLite's (bytes) whatever the database's locale.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from envcat.models import db
from envcat.services.errors import ValidationFailed

_CURSOR_PREFIX = "n:"


@dataclass(frozen=True)
class Page:
    """One page of rows, how many match in all, and the cursor of the next page (or None)."""

    rows: list[Any]
    total: int
    next_cursor: str | None


def encode_cursor(name: str) -> str:
    """The opaque cursor that continues after `name`."""
    raw = (_CURSOR_PREFIX + name).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name a cursor continues after; 400 for anything this api did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith(_CURSOR_PREFIX) or len(raw) == len(_CURSOR_PREFIX):
        raise ValidationFailed("The cursor is not one this api handed out.")
    return raw[len(_CURSOR_PREFIX) :]


def _sortable(expression: ColumnElement[str] | InstrumentedAttribute[str]) -> ColumnElement[str]:
    if db.session.get_bind().dialect.name == "postgresql":
        return expression.collate("C")
    return expression.expression  # SQLite compares bytes (BINARY) already


def name_search(column: InstrumentedAttribute[str], q: str) -> ColumnElement[bool]:
    """Case-insensitive substring of the name (LIKE wildcards in `q` are literal)."""
    return func.lower(column).contains(q.lower(), autoescape=True)


def paginate(
    statement: Select[*tuple[Any, ...]],
    column: InstrumentedAttribute[str],
    *,
    limit: int | None,
    cursor: str | None,
) -> Page:
    """Rows of `statement` in name order: all of them, or `limit` after `cursor`."""
    folded, exact = _sortable(func.lower(column)), _sortable(column)
    count = select(func.count()).select_from(statement.order_by(None).subquery())
    total = int(db.session.execute(count).scalar_one())
    if cursor is not None:
        after = literal(decode_cursor(cursor))
        folded_after, exact_after = _sortable(func.lower(after)), _sortable(after)
        statement = statement.where(
            or_(folded > folded_after, and_(folded == folded_after, exact > exact_after))
        )
    statement = statement.order_by(folded, exact)
    if limit is None:
        return Page(list(db.session.execute(statement).all()), total, None)
    rows = list(db.session.execute(statement.limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, total, encode_cursor(_name_of(rows[-1])) if more else None)


def _name_of(row: Any) -> str:
    first = row[0]
    return str(first.name)
