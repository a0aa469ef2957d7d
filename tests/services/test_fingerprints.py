"""Scan fingerprints of key values and kept versions (issue #19), on SQLite and PostgreSQL.

Written with each value, keyed (never the plain SHA-256), none for short values;
matched per workspace; backfilled for keys older than scanning; still matching
across a keyring rotation, then re-keyed by `refresh`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from flask import Flask
from pydantic import SecretStr
from sqlalchemy import select, text

from envcat.core.keys import new_kms_key
from envcat.core.schemas.bundles import KeyCreate, KeyUpdate
from envcat.core.settings import Settings
from envcat.models import Key, KeyVersion, Tenant, db
from envcat.services import fingerprints, keys
from envcat.services.runtime import create_service_app
from envcat.services.tenancy import Actor
from tests.support.api import SeedKey, seed_bundle
from tests.support.databases import migrated
from tests.support.settings import make_settings

OLD = "canary-old-value-7f3a91c2"
NEW = "canary-new-value-0b8e55d4"
SHORT = "tiny-pw-1"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(database_url, redis_url, broker_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    migrated(settings.database_url)
    service = create_service_app(settings)
    with service.app_context():
        for tenant in ("t-one", "t-two"):
            db.session.add(Tenant(id=tenant, name=tenant, kind="personal"))
        db.session.commit()
        yield service


def _create(tenant: str, name: str, value: str) -> str:
    created = keys.create_key(Actor(tenant, "u-1"), KeyCreate(name=name, value=value))
    return created.id


def test_each_write_stores_a_keyed_fingerprint_never_the_plain_hash(app: Flask) -> None:
    key_id = _create("t-one", "DATABASE_URL", OLD)
    keys.update_key(Actor("t-one", "u-1"), key_id, KeyUpdate(value=NEW))
    short_id = _create("t-one", "PIN", SHORT)
    key = db.session.get(Key, key_id)
    assert key is not None and key.scan_fingerprint is not None
    kid, _, mac = key.scan_fingerprint.partition(":")
    assert kid == fingerprints.scan_keys()[0][0] and len(mac) == 64
    stored = " ".join(
        str(v) for v in db.session.execute(text("SELECT * FROM key_versions")).all()
    ) + " ".join(str(v) for v in db.session.execute(text("SELECT * FROM keys")).all())
    for value in (OLD, NEW, SHORT):
        assert value not in stored and sha(value) not in stored
    prints = db.session.execute(
        select(KeyVersion.version, KeyVersion.scan_fingerprint).where(KeyVersion.key_id == key_id)
    ).all()
    assert [number for number, _ in prints] == [1, 2] and all(p for _, p in prints)
    assert db.session.get(Key, short_id).scan_fingerprint is None  # type: ignore[union-attr]


def test_current_and_kept_values_match_by_name_in_their_workspace_only(app: Flask) -> None:
    key_id = _create("t-one", "DATABASE_URL", OLD)
    keys.update_key(Actor("t-one", "u-1"), key_id, KeyUpdate(value=NEW))
    _create("t-one", "PIN", SHORT)
    _create("t-two", "OTHER_SECRET", "canary-other-tenant-99a1")
    submitted = [sha(OLD), sha(NEW), sha(SHORT), sha("canary-other-tenant-99a1"), sha("x" * 20)]
    assert fingerprints.matching_names("t-one", submitted) == {
        sha(OLD): ["DATABASE_URL"],
        sha(NEW): ["DATABASE_URL"],
    }
    assert fingerprints.matching_names("t-two", [sha(OLD), sha(NEW)]) == {}


def test_refresh_backfills_keys_older_than_scanning_and_is_idempotent(app: Flask) -> None:
    seed_bundle("t-one", "legacy", [SeedKey("LEGACY_TOKEN", OLD), SeedKey("PIN", SHORT)])
    assert fingerprints.matching_names("t-one", [sha(OLD)]) == {}
    done = fingerprints.refresh(batch_size=1)
    assert (done.fingerprinted, done.too_short, done.undecryptable) == (1, 1, 0)
    assert fingerprints.matching_names("t-one", [sha(OLD)]) == {sha(OLD): ["LEGACY_TOKEN"]}
    again = fingerprints.refresh()
    assert again.fingerprinted == 0 and again.too_short == 1


def test_a_keyring_rotation_keeps_matching_and_refresh_rekeys(
    app: Flask, settings: Settings
) -> None:
    key_id = _create("t-one", "DATABASE_URL", OLD)
    old_kid = fingerprints.scan_keys()[0][0]
    rotated = settings.model_copy(
        update={"bundle_kms_key": SecretStr(f"{new_kms_key()},{settings.kms_key_value()}")}
    )
    with create_service_app(rotated).app_context():
        assert fingerprints.scan_keys()[1][0] == old_kid  # the old derived key still matches
        assert fingerprints.matching_names("t-one", [sha(OLD)]) == {sha(OLD): ["DATABASE_URL"]}
        assert fingerprints.refresh().fingerprinted == 2  # the key and its version
        key = db.session.get(Key, key_id)
        assert key is not None and key.scan_fingerprint is not None
        assert not key.scan_fingerprint.startswith(f"{old_kid}:")
        assert fingerprints.matching_names("t-one", [sha(OLD)]) == {sha(OLD): ["DATABASE_URL"]}
