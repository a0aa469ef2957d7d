"""Keyring rotation on SQLite and PostgreSQL: bounded batches, nothing lost, nothing overwritten."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, select, update

from envcat.core.kms import Keyring
from envcat.models import Key, db
from envcat.services import rotation
from envcat.services.runtime import current
from tests.support import present
from tests.support.rotation import (
    NEW,
    seed_values,
)


def _plaintexts(keyring: Keyring) -> dict[str, str]:
    rows = db.session.execute(select(Key.id, Key.tenant_id, Key.name, Key.value)).all()
    return {
        name: keyring.decrypt(value, tenant_id=tenant_id, key_id=key_id)
        for key_id, tenant_id, name, value in rows
    }


def test_rotation_reencrypts_every_value_in_bounded_batches(apps: tuple[Flask, Flask]) -> None:
    old, new = apps
    values = {f"KEY_{i}": f"value-{i}-é\n" for i in range(5)}
    seed_values(old, values)
    seed_values(old, {"OTHER": "tenant b"}, tenant_id="t-b")
    seed_values(new, {"FRESH": "already under the primary"})
    with new.app_context():
        assert rotation.count_outdated() == 6
        assert [rotation.rotate_batch(4) for _ in range(3)] == [4, 2, 0]
        assert rotation.count_outdated() == 0
        only_new = Keyring.from_setting(NEW)
        assert _plaintexts(only_new) == {
            **values,
            "OTHER": "tenant b",
            "FRESH": "already under the primary",
        }
    with old.app_context():
        # the old keyring alone no longer reads them: they really moved
        assert rotation.count_outdated() == 7


def test_rotate_batch_refuses_a_batch_size_below_one(apps: tuple[Flask, Flask]) -> None:
    with apps[1].app_context(), pytest.raises(ValueError, match="at least 1"):
        rotation.rotate_batch(0)


def test_a_value_written_during_the_rotation_is_not_overwritten(
    apps: tuple[Flask, Flask], database_url: str
) -> None:
    old, new = apps
    seed_values(old, {"RACED": "before", "CALM": "calm"})
    with new.app_context():
        raced = db.session.execute(select(Key).where(Key.name == "RACED")).scalar_one()
        raced_id, tenant_id = raced.id, raced.tenant_id
        fresh_value = current().keyring.encrypt(
            "written by a user", tenant_id=tenant_id, key_id=raced_id
        )
        db.session.rollback()
        other_writer = create_engine(database_url)
        fired: list[bool] = []

        def write_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            # Between rotation's read and its UPDATE, someone else saves a new value.
            if statement.lstrip().upper().startswith("UPDATE KEYS") and not fired:
                fired.append(True)
                with other_writer.begin() as other:
                    other.execute(update(Key).where(Key.id == raced_id).values(value=fresh_value))

        event.listen(db.engine, "before_cursor_execute", write_first)
        try:
            rotated = rotation.rotate_batch(10)
        finally:
            event.remove(db.engine, "before_cursor_execute", write_first)
            other_writer.dispose()
        assert fired == [True]
        assert rotated == 1  # CALM only: RACED changed under it
        assert _plaintexts(current().keyring)["RACED"] == "written by a user"
        assert rotation.count_outdated() == 0


def test_a_value_that_does_not_decrypt_is_skipped_not_lost(apps: tuple[Flask, Flask]) -> None:
    old, new = apps
    seed_values(old, {"GOOD_1": "one", "BROKEN": "lost?", "GOOD_2": "two"})
    with new.app_context():
        broken = db.session.execute(select(Key).where(Key.name == "BROKEN")).scalar_one()
        good = db.session.execute(select(Key).where(Key.name == "GOOD_1")).scalar_one()
        broken.value = good.value  # a ciphertext moved to another row
        db.session.commit()
        stored = broken.value
        assert rotation.rotate_batch(1) == 1
        assert rotation.rotate_batch(10) == 1
        assert rotation.rotate_batch(10) == 0
        assert rotation.count_outdated() == 1
        db.session.expire_all()
        assert present(db.session.get(Key, broken.id)).value == stored
