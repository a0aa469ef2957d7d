"""The unit of work: one `transaction()` owns the commit (issue #13).

A service makes its change and appends the audit event that records it
(`audit.append`, a flush) inside one `transaction()`, so both commit or
neither does. A `transaction()` inside another joins it: only the outermost
commits or rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError

from envcat.models import db
from envcat.services.errors import Conflict

_DEPTH = "envcat.transaction_depth"


def in_transaction() -> bool:
    """Whether the current session is inside a `transaction()` block."""
    depth: int = db.session.info.get(_DEPTH, 0)
    return depth > 0


@contextmanager
def transaction(conflict: str = "The change conflicts with another one; retry.") -> Iterator[None]:
    """Run the block's writes (the change and its audit events) as one transaction and commit them.

    A unique-constraint clash at any flush or at commit (a race with another
    writer) becomes a 409 with `conflict` as its message; any error rolls the
    whole block back, so a failed write leaves the previous state intact and
    no event of it behind.
    """
    info = db.session.info
    depth: int = info.get(_DEPTH, 0)
    outermost = depth == 0
    info[_DEPTH] = depth + 1
    try:
        yield
        if outermost:
            db.session.commit()
    except IntegrityError:
        if outermost:
            db.session.rollback()
        raise Conflict(conflict) from None
    except BaseException:
        if outermost:
            db.session.rollback()
        raise
    finally:
        info[_DEPTH] = depth
