"""Undoing one import as a unit, on SQLite and PostgreSQL (issue #19)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from envcat.core.settings import Settings
from envcat.models import AuditEvent, Key, db
from tests.support.settings import make_settings


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(database_url, redis_url, broker_url)


@pytest.fixture
def owner(signed_as: Any) -> Any:
    return signed_as("u-owner", "t-a", "owner")


def _bundle(client: Any, name: str = "production/api") -> str:
    return str(client.post("/api/v1/bundles", {"name": name}).get_json()["id"])


def _import(client: Any, bundle: str, content: str) -> str:
    response = client.post(
        f"/api/v1/bundles/{bundle}/import",
        {"format": "dotenv", "content": content, "overwrite": True},
    )
    assert response.status_code == 200, response.get_json()
    db.session.expire_all()
    events = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "bundle.imported").order_by(AuditEvent.id)
    ).scalars()
    return str(list(events)[-1].details["import_id"])


def _values(client: Any, bundle: str) -> dict[str, str]:
    exported = client.get(f"/api/v1/bundles/{bundle}/export?format=json")
    values: dict[str, str] = exported.get_json()
    return values


def _undo(client: Any, bundle: str, import_id: str) -> Any:
    return client.post(f"/api/v1/bundles/{bundle}/imports/{import_id}/undo")


def test_an_import_is_undone_as_one_unit_and_audited(owner: Any, signed_as: Any) -> None:
    bundle = _bundle(owner)
    _import(owner, bundle, "KEPT=kept\nCHANGED=before\n")
    lib = owner.post("/api/v1/keys", {"name": "LIBRARY", "value": "lib"}).get_json()["id"]
    import_id = _import(owner, bundle, "CHANGED=after\nNEW_ONE=n1\nNEW_TWO=n2\nLIBRARY=lib\n")
    assert _values(owner, bundle) == {
        "KEPT": "kept",
        "CHANGED": "after",
        "NEW_ONE": "n1",
        "NEW_TWO": "n2",
        "LIBRARY": "lib",
    }
    member = signed_as("u-member", "t-a", "member")
    assert _undo(member, bundle, import_id).status_code == 403

    response = _undo(owner, bundle, import_id)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "import_id": import_id,
        "restored": ["CHANGED"],
        "deleted": ["NEW_ONE", "NEW_TWO"],
        "detached": 1,
    }
    assert _values(owner, bundle) == {"KEPT": "kept", "CHANGED": "before"}
    db.session.expire_all()
    names = set(db.session.execute(select(Key.name)).scalars())
    assert names == {"KEPT", "CHANGED", "LIBRARY"}  # the library key stays in the library
    assert owner.get(f"/api/v1/keys/{lib}").status_code == 200
    (event,) = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "bundle.import_undone")
    ).scalars()
    assert event.actor == "u-owner" and event.details["import_id"] == import_id
    assert "before" not in str(event.details) and "after" not in str(event.details)

    again = _undo(owner, bundle, import_id)
    assert again.status_code == 409 and again.get_json()["error"] == "conflict"


def test_an_undo_changes_nothing_when_a_key_changed_since(owner: Any) -> None:
    bundle = _bundle(owner)
    _import(owner, bundle, "A=a0\nB=b0\n")
    import_id = _import(owner, bundle, "A=a1\nB=b1\n")
    key_b = db.session.execute(select(Key.id).where(Key.name == "B")).scalar_one()
    owner.patch(f"/api/v1/keys/{key_b}", {"value": "b2 by hand"})
    response = _undo(owner, bundle, import_id)
    assert response.status_code == 409
    assert "B" in response.get_json()["message"] and "b2" not in response.get_data(as_text=True)
    assert _values(owner, bundle) == {"A": "a1", "B": "b2 by hand"}


def test_another_tenant_or_an_unknown_import_is_404(owner: Any, signed_as: Any) -> None:
    bundle = _bundle(owner)
    import_id = _import(owner, bundle, "A=a\n")
    intruder = signed_as("u-x", "t-b", "owner")
    assert _undo(intruder, bundle, import_id).status_code == 404
    other = _bundle(intruder, "production/api")
    assert _undo(intruder, other, import_id).status_code == 404
    assert _undo(owner, bundle, "no-such-import").status_code == 404
    assert _values(owner, bundle) == {"A": "a"}
