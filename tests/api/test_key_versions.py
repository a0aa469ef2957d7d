"""Key versions through the real api on SQLite and PostgreSQL (issue #19).

Every write keeps a version; the list never carries a value; reveal is member+ and
audited; rollback is admin+, a new version, audited; other tenants get 404; the
versions are encrypted and bound to their key and number; nothing old leaks.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from sqlalchemy import insert, select

from envcat.core.settings import Settings
from envcat.models import AuditEvent, Key, KeyVersion, db, new_uuid, utcnow
from envcat.services.runtime import current
from tests.support.api import redis_dump
from tests.support.settings import make_settings

KEYS = "/api/v1/keys"


@pytest.fixture
def kept() -> int:
    """KEY_VERSIONS_KEPT of the test's server (a test parametrises it to see the cap)."""
    return 20


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str, kept: int) -> Settings:
    return make_settings(database_url, redis_url, broker_url, key_versions_kept=kept)


@pytest.fixture
def owner(signed_as: Any) -> Any:
    return signed_as("u-owner", "t-a", "owner")


def _key(client: Any, name: str = "DB_PASSWORD", value: str = "v1-plaintext") -> str:
    response = client.post(KEYS, {"name": name, "value": value})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _update(client: Any, key_id: str, value: str) -> None:
    response = client.patch(f"{KEYS}/{key_id}", {"value": value})
    assert response.status_code == 200, response.get_json()


def _versions(client: Any, key_id: str) -> list[dict[str, Any]]:
    response = client.get(f"{KEYS}/{key_id}/versions")
    assert response.status_code == 200, response.get_json()
    versions: list[dict[str, Any]] = response.get_json()["versions"]
    return versions


def _revealed(client: Any, key_id: str) -> str:
    return str(client.get(f"{KEYS}/{key_id}?reveal=true").get_json()["value"])


def _events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def test_every_write_keeps_a_version_and_the_list_never_shows_a_value(owner: Any) -> None:
    key_id = _key(owner, value="first-plaintext")
    _update(owner, key_id, "second-plaintext-é")
    _update(owner, key_id, "third")
    response = owner.get(f"{KEYS}/{key_id}/versions")
    assert "plaintext" not in response.get_data(as_text=True)
    listed = response.get_json()
    assert listed["name"] == "DB_PASSWORD" and listed["key_id"] == key_id
    rows = [
        (v["version"], v["size"], v["created_by"], v["author_email"], v["is_current"], v["value"])
        for v in listed["versions"]
    ]
    assert rows == [
        (3, 5, "u-owner", "u-owner@example.test", True, None),
        (2, len("second-plaintext-é".encode()), "u-owner", "u-owner@example.test", False, None),
        (1, len(b"first-plaintext"), "u-owner", "u-owner@example.test", False, None),
    ]
    one = owner.get(f"{KEYS}/{key_id}/versions/2").get_json()
    assert one["version"] == 2 and one["value"] is None
    # The stored versions are ciphertext, never the plaintext.
    stored = [v.value for v in db.session.query(KeyVersion).filter_by(key_id=key_id)]
    assert len(stored) == 3
    assert not any("plaintext" in value or value == "third" for value in stored)


def test_an_unchanged_value_adds_no_version(owner: Any) -> None:
    key_id = _key(owner, value="same")
    _update(owner, key_id, "same")
    owner.patch(f"{KEYS}/{key_id}", {"description": "only the description"})
    assert [v["version"] for v in _versions(owner, key_id)] == [1]


@pytest.mark.parametrize("kept", [3])
def test_versions_are_capped_at_key_versions_kept(owner: Any, kept: int) -> None:
    key_id = _key(owner, value="value-1")
    for n in range(2, 7):
        _update(owner, key_id, f"value-{n}")
    assert [v["version"] for v in _versions(owner, key_id)] == [6, 5, 4]
    assert owner.get(f"{KEYS}/{key_id}/versions/3").status_code == 404
    assert db.session.query(KeyVersion).filter_by(key_id=key_id).count() == kept


def test_a_key_written_before_versions_keeps_its_old_value(owner: Any) -> None:
    key_id = new_uuid()
    stored = current().keyring.encrypt("legacy-value", tenant_id="t-a", key_id=key_id)
    db.session.execute(
        insert(Key).values(
            id=key_id,
            tenant_id="t-a",
            name="LEGACY",
            value=stored,
            is_secret=True,
            description="",
            created_at=utcnow(),
            updated_at=utcnow(),
        )
    )
    db.session.commit()
    assert _versions(owner, key_id) == []
    _update(owner, key_id, "new-value")
    versions = _versions(owner, key_id)
    assert [(v["version"], v["created_by"]) for v in versions] == [(2, "u-owner"), (1, None)]
    revealed = owner.get(f"{KEYS}/{key_id}/versions/1?reveal=true").get_json()
    assert revealed["value"] == "legacy-value"


def test_rollback_makes_a_new_version_equal_to_the_old_one_and_is_audited(
    owner: Any, signed_as: Any
) -> None:
    key_id = _key(owner, value="alpha")
    _update(owner, key_id, "beta")
    _update(owner, key_id, "gamma")
    member = signed_as("u-member", "t-a", "member")
    refused = member.post(f"{KEYS}/{key_id}/rollback", {"version": 1})
    assert refused.status_code == 403
    assert owner.post(f"{KEYS}/{key_id}/rollback", {"version": 9}).status_code == 404
    assert owner.post(f"{KEYS}/{key_id}/rollback", {"version": 0}).status_code == 400
    assert owner.post(f"{KEYS}/{key_id}/rollback", {"version": "1"}).status_code == 400

    response = owner.post(f"{KEYS}/{key_id}/rollback", {"version": 1})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["version"] == 4 and body["is_current"] is True and body["value"] is None
    assert _revealed(owner, key_id) == "alpha"
    assert [v["version"] for v in _versions(owner, key_id)] == [4, 3, 2, 1]
    (event,) = _events("key.rolled_back")
    assert event.actor == "u-owner" and event.target == f"key:{key_id}"
    assert event.details == {"name": "DB_PASSWORD", "version": 1, "new_version": 4}
    assert "alpha" not in str(event.details)
    # Roll forward again: the rolled-back-over value is still there.
    owner.post(f"{KEYS}/{key_id}/rollback", {"version": 3})
    assert _revealed(owner, key_id) == "gamma"


def test_revealing_a_version_needs_member_and_is_audited(owner: Any, signed_as: Any) -> None:
    key_id = _key(owner, value="old-secret")
    _update(owner, key_id, "new-secret")
    viewer = signed_as("u-viewer", "t-a", "viewer")
    assert [v["version"] for v in _versions(viewer, key_id)] == [2, 1]
    assert viewer.get(f"{KEYS}/{key_id}/versions/1?reveal=true").status_code == 403
    assert _events("key.version_revealed") == []
    member = signed_as("u-member", "t-a", "member")
    response = member.get(f"{KEYS}/{key_id}/versions/1?reveal=true")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["value"] == "old-secret"
    (event,) = _events("key.version_revealed")
    assert event.actor == "u-member"
    assert event.details == {"name": "DB_PASSWORD", "version": 1}


def test_versions_of_another_tenant_are_404(owner: Any, signed_as: Any) -> None:
    key_id = _key(owner, value="tenant-a-old")
    _update(owner, key_id, "tenant-a-new")
    intruder = signed_as("u-intruder", "t-b", "owner")
    for response in (
        intruder.get(f"{KEYS}/{key_id}/versions"),
        intruder.get(f"{KEYS}/{key_id}/versions/1"),
        intruder.get(f"{KEYS}/{key_id}/versions/1?reveal=true"),
        intruder.post(f"{KEYS}/{key_id}/rollback", {"version": 1}),
    ):
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"
        assert "tenant-a" not in response.get_data(as_text=True)
    assert _revealed(owner, key_id) == "tenant-a-new"
    assert _events("key.version_revealed") == [] and _events("key.rolled_back") == []


def test_a_version_copied_onto_another_number_does_not_decrypt(owner: Any) -> None:
    key_id = _key(owner, value="number-one")
    _update(owner, key_id, "number-two")
    rows = {v.version: v for v in db.session.query(KeyVersion).filter_by(key_id=key_id)}
    rows[2].value = rows[1].value
    db.session.commit()
    response = owner.get(f"{KEYS}/{key_id}/versions/2?reveal=true")
    assert response.status_code == 500
    assert response.get_json()["error"] == "decryption_failed"
    assert "number-one" not in response.get_data(as_text=True)


def test_deleting_a_key_deletes_its_versions(owner: Any) -> None:
    key_id = _key(owner, value="doomed")
    _update(owner, key_id, "doomed-2")
    assert owner.delete(f"{KEYS}/{key_id}").status_code == 204
    db.session.expire_all()
    assert db.session.query(KeyVersion).filter_by(key_id=key_id).count() == 0


def test_an_import_records_its_id_in_its_event_and_its_versions(owner: Any) -> None:
    bundle = owner.post("/api/v1/bundles", {"name": "production/api"}).get_json()["id"]
    key_id = _key(owner, "TOKEN", "before-import")
    response = owner.post(
        f"/api/v1/bundles/{bundle}/import",
        {"format": "dotenv", "content": "TOKEN=after-import\nFRESH=new\n", "overwrite": True},
    )
    assert response.status_code == 200, response.get_json()
    (event,) = _events("bundle.imported")
    import_id = event.details["import_id"]
    versions = _versions(owner, key_id)
    assert [(v["version"], v["import_id"]) for v in versions] == [(2, import_id), (1, None)]
    fresh = db.session.execute(select(Key.id).where(Key.name == "FRESH")).scalar_one()
    assert [v["import_id"] for v in _versions(owner, fresh)] == [import_id]


def test_no_plaintext_of_an_old_version_reaches_redis_or_logs(
    owner: Any, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = "old-version-canary-7f3a"
    key_id = _key(owner, value=canary)
    _update(owner, key_id, "current-value")
    owner.get(f"{KEYS}/{key_id}/versions")
    assert owner.get(f"{KEYS}/{key_id}/versions/1?reveal=true").get_json()["value"] == canary
    owner.post(f"{KEYS}/{key_id}/rollback", {"version": 1})
    owner.post(f"{KEYS}/{key_id}/rollback", {"version": 2})
    assert canary not in redis_dump(redis_client)
    assert canary not in caplog.text
    details = " ".join(str(e.details) for e in db.session.query(AuditEvent))
    assert canary not in details
