"""rotate-kms re-encrypts kept key versions too, on SQLite and PostgreSQL (issue #19)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from envcat.core.keys import new_kms_key
from envcat.core.kms import VERSION, Keyring
from envcat.models import Key, KeyVersion, Tenant, db
from envcat.services import keys, rotation, versions
from envcat.services.runtime import create_service_app
from envcat.services.tenancy import Actor
from tests.support import present
from tests.support.databases import migrated
from tests.support.settings import make_settings

OLD, NEW = new_kms_key(), new_kms_key()
TENANT = "t-rot"


@pytest.fixture
def apps(
    database_url: str, redis_url: str, broker_url: str
) -> Iterator[tuple[Flask, Flask, Flask]]:
    """(old keyring only, new primary that still reads the old, new key only)."""
    migrated(database_url)
    made = tuple(
        create_service_app(make_settings(database_url, redis_url, broker_url, bundle_kms_key=ring))
        for ring in (OLD, f"{NEW},{OLD}", NEW)
    )
    yield made  # type: ignore[misc]  # three apps, as annotated
    for app in made:
        with app.app_context():
            db.engine.dispose()


def _seed_history(app: Flask) -> str:
    """A key written three times under the old keyring; return its id."""
    with app.app_context():
        db.session.add(Tenant(id=TENANT, name=TENANT, kind="org"))
        db.session.flush()
        key = keys.new_key(TENANT, "DB_URL", "v-one", is_secret=True, description="", author="u")
        db.session.flush()
        keys.set_value(key, "v-two", author="u")
        db.session.commit()
        keys.set_value(key, "v-three", author="u")
        db.session.commit()
        return key.id


def test_rotation_reencrypts_versions_and_counts_them(apps: tuple[Flask, Flask, Flask]) -> None:
    old, new, only_new = apps
    key_id = _seed_history(old)
    with new.app_context():
        assert rotation.count_outdated() == 4  # the key and its three versions
        assert [rotation.rotate_batch(3) for _ in range(3)] == [3, 1, 0]
        assert rotation.count_outdated() == 0
        stored = db.session.execute(select(KeyVersion.value)).scalars().all()
        prefix = f"{VERSION}.{Keyring.from_setting(NEW).primary_id}."
        assert len(stored) == 3 and all(value.startswith(prefix) for value in stored)
    with only_new.app_context():
        # The old KMS key is gone: the value and every version still decrypt.
        actor = Actor(tenant_id=TENANT, user_id="u")
        key = db.session.get(Key, key_id)
        assert key is not None and keys.decrypt(key) == "v-three"
        revealed = [versions.reveal_version(actor, key_id, n).value for n in (1, 2, 3)]
        assert revealed == ["v-one", "v-two", "v-three"]
        rolled = versions.rollback(actor, key_id, 1)
        assert rolled.version == 4
        assert keys.decrypt(present(db.session.get(Key, key_id))) == "v-one"


def test_a_version_that_does_not_decrypt_is_skipped_not_lost(
    apps: tuple[Flask, Flask, Flask],
) -> None:
    old, new, _ = apps
    key_id = _seed_history(old)
    with new.app_context():
        broken = db.session.execute(
            select(KeyVersion).where(KeyVersion.key_id == key_id, KeyVersion.version == 2)
        ).scalar_one()
        damaged = broken.value[:-4] + "AAAA"
        broken.value = damaged
        db.session.commit()
        assert rotation.rotate_batch(10) == 3  # the key and versions 1 and 3
        assert rotation.count_outdated() == 1
        db.session.expire_all()
        assert present(db.session.get(KeyVersion, broken.id)).value == damaged
