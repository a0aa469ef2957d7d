"""The key library through the real api: CRUD, masking, reveal, roles, bad input, at-rest form."""

from __future__ import annotations

import pytest

from envcat.core.kms import VERSION
from envcat.models import AuditEvent, BundleKey, Key, db
from envcat.services.runtime import current

KEY_FIELDS = {
    "id",
    "name",
    "is_secret",
    "dangerous_ok",
    "description",
    "value",
    "bundle_count",
    "created_at",
    "updated_at",
}


@pytest.fixture
def owner(signed_as):
    return signed_as("u-owner", "t-a", "owner")


def _key(client, name: str = "DB_PASSWORD", value: str = "s3cret-value", **extra):
    response = client.post("/api/v1/keys", {"name": name, "value": value, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _keys_state() -> list[tuple[object, ...]]:
    db.session.expire_all()
    rows = db.session.query(Key).all()
    return sorted((k.id, k.name, k.value, k.is_secret, k.description) for k in rows)


def test_create_masks_a_secret_and_shows_a_plain_value(owner) -> None:
    secret = _key(owner, description="primary db")
    plain = _key(owner, "LOG_LEVEL", "info", is_secret=False)
    assert set(secret) == KEY_FIELDS
    assert secret["value"] is None and secret["is_secret"] is True
    assert secret["description"] == "primary db" and secret["bundle_count"] == 0
    assert plain["value"] == "info"
    listed = owner.get("/api/v1/keys").get_json()["keys"]
    assert [(k["name"], k["value"]) for k in listed] == [
        ("DB_PASSWORD", None),
        ("LOG_LEVEL", "info"),
    ]
    assert owner.get(f"/api/v1/keys/{secret['id']}").get_json()["value"] is None


def test_values_are_stored_encrypted_and_bound_to_their_row(owner) -> None:
    first = _key(owner, "FIRST", "first-plaintext")
    second = _key(owner, "SECOND", "second-plaintext")
    rows = {k.id: k for k in db.session.query(Key)}
    stored = rows[first["id"]].value
    assert stored.startswith(f"{VERSION}.") and "first-plaintext" not in stored
    keyring = current().keyring
    assert keyring.decrypt(stored, tenant_id="t-a", key_id=first["id"]) == "first-plaintext"
    # A ciphertext copied onto another row no longer decrypts: reveal fails loudly, list masks.
    rows[second["id"]].value = stored
    db.session.commit()
    broken = owner.get(f"/api/v1/keys/{second['id']}?reveal=true")
    assert broken.status_code == 500
    assert broken.get_json()["error"] == "decryption_failed"
    assert "first-plaintext" not in broken.get_data(as_text=True)
    assert owner.get("/api/v1/keys").status_code == 200


def test_reveal_returns_the_value_and_is_audited(owner) -> None:
    key = _key(owner, value="line1\nline2 ünï 🔑")
    response = owner.get(f"/api/v1/keys/{key['id']}?reveal=true")
    assert response.status_code == 200
    assert response.get_json()["value"] == "line1\nline2 ünï 🔑"
    assert response.headers["Cache-Control"] == "no-store"
    event = db.session.query(AuditEvent).filter_by(action="key.revealed").one()
    assert event.target == f"key:{key['id']}"
    assert event.details == {"name": "DB_PASSWORD"}
    assert event.actor == "u-owner"
    assert owner.get(f"/api/v1/keys/{key['id']}?reveal=false").get_json()["value"] is None
    assert db.session.query(AuditEvent).filter_by(action="key.revealed").count() == 1


def test_patch_changes_each_field_and_keeps_the_value_decryptable(owner) -> None:
    key = _key(owner)
    response = owner.patch(
        f"/api/v1/keys/{key['id']}",
        {"name": "DATABASE_PASSWORD", "value": "new-value", "description": "d"},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["description"], body["value"]) == ("DATABASE_PASSWORD", "d", None)
    revealed = owner.get(f"/api/v1/keys/{key['id']}?reveal=true").get_json()
    assert revealed["value"] == "new-value"
    plain = owner.patch(f"/api/v1/keys/{key['id']}", {"is_secret": False}).get_json()
    assert plain["value"] == "new-value"
    event = db.session.query(AuditEvent).filter_by(action="key.updated").first()
    assert event is not None
    assert event.details == {
        "name": "DB_PASSWORD",
        "new_name": "DATABASE_PASSWORD",
        "fields": ["description", "name", "value"],
    }


def test_resending_unchanged_fields_changes_and_audits_nothing(owner) -> None:
    key = _key(owner, description="same")
    before = _keys_state()
    same = {
        "name": "DB_PASSWORD",
        "value": "s3cret-value",
        "is_secret": True,
        "description": "same",
    }
    response = owner.patch(f"/api/v1/keys/{key['id']}", same)
    assert response.status_code == 200
    assert response.get_json()["updated_at"] == key["updated_at"]
    assert _keys_state() == before  # not even re-encrypted
    assert db.session.query(AuditEvent).filter_by(action="key.updated").count() == 0
    owner.patch(f"/api/v1/keys/{key['id']}", {**same, "description": "new"})
    event = db.session.query(AuditEvent).filter_by(action="key.updated").one()
    assert event.details == {"name": "DB_PASSWORD", "fields": ["description"]}


def test_duplicate_and_rename_conflicts_are_409(owner) -> None:
    _key(owner, "A")
    b = _key(owner, "B")
    before = _keys_state()
    assert owner.post("/api/v1/keys", {"name": "A", "value": "x"}).status_code == 409
    response = owner.patch(f"/api/v1/keys/{b['id']}", {"name": "A", "value": "changed"})
    assert response.status_code == 409
    assert response.get_json()["error"] == "conflict"
    assert _keys_state() == before


def test_names_are_case_sensitive(owner) -> None:
    _key(owner, "token")
    _key(owner, "TOKEN")
    assert len(owner.get("/api/v1/keys?q=ToKeN").get_json()["keys"]) == 2


def test_delete_detaches_from_every_bundle(owner) -> None:
    key = _key(owner)
    for name in ("one", "two"):
        bundle = owner.post("/api/v1/bundles", {"name": name}).get_json()
        owner.post(f"/api/v1/bundles/{bundle['id']}/keys", {"key_id": key["id"]})
    assert owner.get(f"/api/v1/keys/{key['id']}").get_json()["bundle_count"] == 2
    assert owner.delete(f"/api/v1/keys/{key['id']}").status_code == 204
    assert db.session.query(BundleKey).count() == 0
    assert owner.get(f"/api/v1/keys/{key['id']}").status_code == 404
    assert all(b["key_count"] == 0 for b in owner.get("/api/v1/bundles").get_json()["bundles"])
    event = db.session.query(AuditEvent).filter_by(action="key.deleted").one()
    assert event.details == {"name": "DB_PASSWORD", "detached_from": 2}


BAD_CREATE_BODIES: list[dict[str, object]] = [
    {},
    {"name": "A"},
    {"value": "v"},
    {"name": "", "value": "v"},
    {"name": "9LIVES", "value": "v"},
    {"name": "HAS SPACE", "value": "v"},
    {"name": "DOT.NAME", "value": "v"},
    {"name": "ÜBER", "value": "v"},
    {"name": "A" * 201, "value": "v"},
    {"name": "A", "value": None},
    {"name": "A", "value": 1},
    {"name": "A", "value": ["v"]},
    {"name": "A", "value": "x" * (64 * 1024 + 1)},
    {"name": "A", "value": "\x00"},
    {"name": "A", "value": "\ud83d"},
    {"name": "A", "value": "v", "is_secret": 1},
    {"name": "A", "value": "v", "is_secret": None},
    {"name": "A", "value": "v", "description": 3},
    {"name": "A", "value": "v", "tenant_id": "t-b"},
    {"name": "A", "value": "v", "id": "chosen-id"},
]


def test_bad_create_bodies_are_400(owner) -> None:
    for body in BAD_CREATE_BODIES:
        response = owner.post("/api/v1/keys", body)
        assert response.status_code == 400, str(body)[:80]
        assert response.get_json()["error"] == "validation_error", str(body)[:80]
    assert db.session.query(Key).count() == 0


def test_bad_patches_are_400_and_change_nothing(owner) -> None:
    key = _key(owner)
    before = _keys_state()
    for body in (
        {"name": None},
        {"value": None},
        {"is_secret": "false"},
        {"name": "bad name"},
        {"value": "x" * (64 * 1024 + 1)},
        {"bundle_count": 3},
    ):
        response = owner.patch(f"/api/v1/keys/{key['id']}", body)
        assert response.status_code == 400, str(body)[:80]
    assert _keys_state() == before


def test_validation_errors_never_echo_the_value(owner) -> None:
    canary = "CANARY-echo-" + "z" * (64 * 1024)
    response = owner.post("/api/v1/keys", {"name": "A", "value": canary, "is_secret": "nope"})
    assert response.status_code == 400
    assert "CANARY-echo" not in response.get_data(as_text=True)


def test_bad_reveal_query_is_400(owner) -> None:
    key = _key(owner)
    response = owner.get(f"/api/v1/keys/{key['id']}?reveal=maybe")
    assert response.status_code == 400
    assert db.session.query(AuditEvent).filter_by(action="key.revealed").count() == 0


# (method, path template, body) in an order the admin can run them one after the other.
ROUTES = [
    ("GET", "/api/v1/keys", None),
    ("GET", "/api/v1/keys/{k}", None),
    ("GET", "/api/v1/keys/{k}?reveal=true", None),
    ("POST", "/api/v1/keys", {"name": "N", "value": "v"}),
    ("PATCH", "/api/v1/keys/{k}", {"value": "x"}),
    ("DELETE", "/api/v1/keys/{k}", None),
]
EXPECTED = {
    "viewer": [200, 200, 403, 403, 403, 403],
    "member": [200, 200, 200, 403, 403, 403],
    "admin": [200, 200, 200, 201, 200, 204],
}


@pytest.mark.parametrize("role", list(EXPECTED))
def test_roles(signed_as, owner, role: str) -> None:
    key = _key(owner)
    client = signed_as(f"u-{role}", "t-a", role)
    for (method, path, body), expected in zip(ROUTES, EXPECTED[role], strict=True):
        before = _keys_state()
        reveals = db.session.query(AuditEvent).filter_by(action="key.revealed").count()
        response = client.call(method, path.format(k=key["id"]), body)
        assert response.status_code == expected, (role, method, path, response.get_json())
        if expected == 403:
            assert response.get_json()["error"] == "forbidden"
            assert _keys_state() == before
            after = db.session.query(AuditEvent).filter_by(action="key.revealed").count()
            assert after == reveals


def test_every_key_route_is_in_the_openapi_document(api_client) -> None:
    spec = api_client.get("/api/v1/openapi.json").get_json()
    assert set(spec["paths"]["/api/v1/keys"]) == {"get", "post"}
    assert set(spec["paths"]["/api/v1/keys/{key_id}"]) == {"get", "patch", "delete"}
    params = {p["name"] for p in spec["paths"]["/api/v1/keys/{key_id}"]["get"]["parameters"]}
    assert params == {"key_id", "reveal"}


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "BASH_ENV", "PATH", "PYTHONSTARTUP", "GIT_SSH_COMMAND"]
)
def test_names_that_change_how_programs_run_need_dangerous_ok(owner, name: str) -> None:
    """Issue #11: the server refuses LD_PRELOAD & co. at write time unless an admin says so."""
    refused = owner.post("/api/v1/keys", {"name": name, "value": "./evil.so"})
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "validation_error"
    assert "dangerous_ok" in refused.get_json()["message"]
    assert "./evil.so" not in refused.get_data(as_text=True)
    assert db.session.query(Key).filter_by(name=name).count() == 0
    allowed = owner.post("/api/v1/keys", {"name": name, "value": "x", "dangerous_ok": True})
    assert allowed.status_code == 201, allowed.get_json()
    assert allowed.get_json()["dangerous_ok"] is True


def test_renaming_to_a_dangerous_name_or_importing_one_is_refused(owner) -> None:
    key = owner.post("/api/v1/keys", {"name": "HARMLESS", "value": "x"}).get_json()
    renamed = owner.patch(f"/api/v1/keys/{key['id']}", {"name": "LD_LIBRARY_PATH"})
    assert renamed.status_code == 400
    assert owner.get(f"/api/v1/keys/{key['id']}").get_json()["name"] == "HARMLESS"
    bundle = owner.post("/api/v1/bundles", {"name": "imp/ort"}).get_json()
    body = {"format": "dotenv", "content": "SAFE=1\nBASH_ENV=$(id)\n"}
    imported = owner.post(f"/api/v1/bundles/{bundle['id']}/import", body)
    assert imported.status_code == 400
    assert db.session.query(Key).filter_by(name="SAFE").count() == 0  # nothing half-written
    assert owner.post(
        f"/api/v1/bundles/{bundle['id']}/import", {**body, "dangerous_ok": True}
    ).status_code in (200, 201)
