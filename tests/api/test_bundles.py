"""Bundles through the real api: CRUD, attach/detach, roles and bad input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envcat.models import AuditEvent, Bundle, BundleKey, Key, db
from tests.support.signed import SignedClient

BUNDLE_FIELDS = {"id", "name", "description", "tags", "created_at", "updated_at", "keys"}
ENTRY_FIELDS = {
    "id",
    "name",
    "alias",
    "export_name",
    "is_secret",
    "required",
    "position",
    "description",
    "value",
}


@pytest.fixture
def owner(signed_as):
    return signed_as("u-owner", "t-a", "owner")


def _bundle(client, name: str = "production/api", **extra):
    response = client.post("/api/v1/bundles", {"name": name, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _add(client, bundle_id: str, **body):
    response = client.post(f"/api/v1/bundles/{bundle_id}/keys", body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _state() -> list[tuple[object, ...]]:
    """Everything a bundle write can touch, to compare before and after a failed write."""
    db.session.expire_all()
    bundles = [(b.id, b.name, b.description, tuple(b.tags)) for b in db.session.query(Bundle)]
    keys = [(k.id, k.name, k.value, k.is_secret, k.description) for k in db.session.query(Key)]
    entries = [(e.bundle_id, e.key_id, e.position, e.required) for e in db.session.query(BundleKey)]
    return sorted(bundles) + sorted(keys) + sorted(entries)


def test_create_returns_the_agreed_detail_shape(owner) -> None:
    body = _bundle(owner, description="API servers", tags=["prod", " web ", "prod"])
    assert set(body) == BUNDLE_FIELDS
    assert body["name"] == "production/api"
    assert body["description"] == "API servers"
    assert body["tags"] == ["prod", "web"]
    assert body["keys"] == []
    assert body["created_at"].endswith("Z") or "+00:00" in body["created_at"]


def test_get_patch_delete_round_trip(owner) -> None:
    created = _bundle(owner)
    got = owner.get(f"/api/v1/bundles/{created['id']}")
    assert got.status_code == 200
    assert got.get_json() == created
    patched = owner.patch(
        f"/api/v1/bundles/{created['id']}", {"name": "staging/api", "tags": ["stage"]}
    )
    assert patched.status_code == 200
    assert patched.get_json()["name"] == "staging/api"
    assert patched.get_json()["tags"] == ["stage"]
    assert patched.get_json()["description"] == ""
    assert owner.delete(f"/api/v1/bundles/{created['id']}").status_code == 204
    assert owner.get(f"/api/v1/bundles/{created['id']}").status_code == 404


def test_list_is_sorted_searchable_and_counts_keys(owner) -> None:
    api = _bundle(owner, "production/api")
    _bundle(owner, "Dev")
    _bundle(owner, "staging/web")
    _add(owner, api["id"], name="A", value="1")
    _add(owner, api["id"], name="B", value="2")
    listed = owner.get("/api/v1/bundles").get_json()["bundles"]
    assert [b["name"] for b in listed] == ["Dev", "production/api", "staging/web"]
    assert {b["name"]: b["key_count"] for b in listed}["production/api"] == 2
    assert set(listed[0]) == {
        "id",
        "name",
        "description",
        "tags",
        "key_count",
        "created_at",
        "updated_at",
    }
    found = owner.get("/api/v1/bundles?q=API").get_json()["bundles"]
    assert [b["name"] for b in found] == ["production/api"]
    # LIKE wildcards in q are literal text, not patterns.
    assert owner.get("/api/v1/bundles?q=%25").get_json()["bundles"] == []
    assert owner.get("/api/v1/bundles?q=_").get_json()["bundles"] == []
    assert owner.get("/api/v1/bundles?q=" + "a" * 201).status_code == 400
    assert owner.get("/api/v1/keys?q=" + "a" * 201).status_code == 400


def test_duplicate_bundle_name_is_409_and_creates_nothing(owner) -> None:
    _bundle(owner)
    before = _state()
    response = owner.post("/api/v1/bundles", {"name": "production/api"})
    assert response.status_code == 409
    assert response.get_json()["error"] == "conflict"
    assert _state() == before


def test_rename_onto_a_taken_name_is_409_and_changes_nothing(owner) -> None:
    _bundle(owner, "a")
    b = _bundle(owner, "b")
    before = _state()
    response = owner.patch(f"/api/v1/bundles/{b['id']}", {"name": "a", "description": "x"})
    assert response.status_code == 409
    assert _state() == before


INVALID_NAMES = ["", "/lead", "trail/", "a//b", "space here", "ü", "a" * 201, "semi;colon", "b\\s"]
VALID_NAMES = ["a", "production/api", "x.y-z_1/2", "A" * 200]


def test_invalid_bundle_names_are_400_and_valid_ones_accepted(owner) -> None:
    for name in INVALID_NAMES:
        response = owner.post("/api/v1/bundles", {"name": name})
        assert response.status_code == 400, name
        assert response.get_json()["error"] == "validation_error", name
    assert db.session.query(Bundle).count() == 0
    for name in VALID_NAMES:
        assert _bundle(owner, name)["name"] == name


BAD_CREATE_BODIES: list[dict[str, object]] = [
    {},
    {"name": 5},
    {"name": "ok", "tags": "prod"},
    {"name": "ok", "tags": [1]},
    {"name": "ok", "tags": [""]},
    {"name": "ok", "tags": ["t"] * 33},
    {"name": "ok", "tags": ["x" * 65]},
    {"name": "ok", "description": None},
    {"name": "ok", "description": "x" * 2001},
    {"name": "ok", "description": "nul\x00"},
    {"name": "ok", "description": "\ud800"},
    {"name": "ok", "unknown": 1},
    {"name": "ok", "tenant_id": "t-b"},
]


def test_bad_create_bodies_are_400(owner) -> None:
    for body in BAD_CREATE_BODIES:
        response = owner.post("/api/v1/bundles", body)
        assert response.status_code == 400, body
        assert response.get_json()["error"] == "validation_error", body
    assert db.session.query(Bundle).count() == 0


def test_malformed_json_bodies_are_400(owner) -> None:
    for data in (b"not json", b"[1, 2]", b'"text"', b"", b"{", b"\xff\xfe", b"null"):
        response = owner.post(
            "/api/v1/bundles", data=data, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, data[:20]
        assert response.get_json()["error"] == "validation_error", data[:20]


def test_deeply_nested_json_body_is_400(owner) -> None:
    response = owner.post(
        "/api/v1/bundles", data=b"[" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_bad_patches_are_400_and_change_nothing(owner) -> None:
    created = _bundle(owner, description="keep")
    before = _state()
    for body in ({"name": None}, {"tags": None}, {"name": "x//y"}, {"extra": True}, {"tags": [7]}):
        response = owner.patch(f"/api/v1/bundles/{created['id']}", body)
        assert response.status_code == 400, body
    assert _state() == before


def test_empty_or_unchanged_patch_is_a_no_op(owner) -> None:
    created = _bundle(owner, description="d", tags=["x"])
    for body in ({}, {"name": "production/api", "description": "d", "tags": ["x"]}):
        response = owner.patch(f"/api/v1/bundles/{created['id']}", body)
        assert response.status_code == 200
        assert response.get_json() == created
    assert db.session.query(AuditEvent).filter_by(action="bundle.updated").count() == 0


def test_create_and_attach_masks_secret_values(owner) -> None:
    bundle = _bundle(owner)
    _add(owner, bundle["id"], name="DB_PASSWORD", value="hunter2hunter2")
    detail = _add(
        owner,
        bundle["id"],
        name="LOG_LEVEL",
        value="debug",
        is_secret=False,
        description="verbosity",
        required=True,
    )
    keys = detail["keys"]
    assert [k["name"] for k in keys] == ["DB_PASSWORD", "LOG_LEVEL"]
    assert all(set(k) == ENTRY_FIELDS for k in keys)
    assert keys[0]["value"] is None and keys[0]["is_secret"] is True
    assert keys[1]["value"] == "debug" and keys[1]["required"] is True
    assert [k["position"] for k in keys] == [0, 1]


def test_attach_existing_key_and_positions_order_the_keys(owner) -> None:
    bundle = _bundle(owner)
    first = owner.post("/api/v1/keys", {"name": "FIRST", "value": "1"}).get_json()
    _add(owner, bundle["id"], name="SECOND", value="2", position=5)
    detail = _add(owner, bundle["id"], key_id=first["id"], position=1, required=True)
    assert [(k["name"], k["position"], k["required"]) for k in detail["keys"]] == [
        ("FIRST", 1, True),
        ("SECOND", 5, False),
    ]


def test_attach_twice_is_409(owner) -> None:
    bundle = _bundle(owner)
    key = owner.post("/api/v1/keys", {"name": "K", "value": "v"}).get_json()
    _add(owner, bundle["id"], key_id=key["id"])
    before = _state()
    response = owner.post(f"/api/v1/bundles/{bundle['id']}/keys", {"key_id": key["id"]})
    assert response.status_code == 409
    assert _state() == before


def test_create_and_attach_with_a_library_name_is_409(owner) -> None:
    bundle = _bundle(owner)
    owner.post("/api/v1/keys", {"name": "TAKEN", "value": "v"})
    before = _state()
    response = owner.post(f"/api/v1/bundles/{bundle['id']}/keys", {"name": "TAKEN", "value": "x"})
    assert response.status_code == 409
    assert _state() == before


def test_attach_unknown_key_is_404(owner) -> None:
    bundle = _bundle(owner)
    response = owner.post(f"/api/v1/bundles/{bundle['id']}/keys", {"key_id": "nope"})
    assert response.status_code == 404


BAD_KEY_BODIES: list[dict[str, object]] = [
    {},
    {"key_id": "k", "name": "A", "value": "v"},
    {"name": "A"},
    {"name": "1BAD", "value": "v"},
    {"name": "A-B", "value": "v"},
    {"name": "A" * 201, "value": "v"},
    {"name": "A", "value": 5},
    {"name": "A", "value": "v", "is_secret": "yes"},
    {"name": "A", "value": "v", "position": -1},
    {"name": "A", "value": "v", "position": True},
    {"name": "A", "value": "v", "position": 2**40},
    {"name": "A", "value": "x" * (64 * 1024 + 1)},
    {"name": "A", "value": "é" * (32 * 1024 + 1)},
    {"name": "A", "value": "nul\x00"},
    {"name": "A", "value": "\udfff"},
    {"key_id": 7},
    {"key_id": "k", "required": "true"},
]


def test_bad_key_bodies_are_400_and_change_nothing(owner) -> None:
    bundle = _bundle(owner)
    before = _state()
    for body in BAD_KEY_BODIES:
        response = owner.post(f"/api/v1/bundles/{bundle['id']}/keys", body)
        assert response.status_code == 400, str(body)[:80]
        assert response.get_json()["error"] == "validation_error", str(body)[:80]
    assert _state() == before


def test_value_of_exactly_64_kib_is_accepted(owner) -> None:
    bundle = _bundle(owner)
    _add(owner, bundle["id"], name="BIG", value="x" * 64 * 1024)


def test_detach_keeps_the_key_in_the_library(owner) -> None:
    bundle = _bundle(owner)
    detail = _add(owner, bundle["id"], name="K", value="v")
    key_id = detail["keys"][0]["id"]
    assert owner.delete(f"/api/v1/bundles/{bundle['id']}/keys/{key_id}").status_code == 204
    assert owner.get(f"/api/v1/bundles/{bundle['id']}").get_json()["keys"] == []
    assert owner.get(f"/api/v1/keys/{key_id}").status_code == 200
    again = owner.delete(f"/api/v1/bundles/{bundle['id']}/keys/{key_id}")
    assert again.status_code == 404


def test_delete_bundle_keeps_its_keys(owner) -> None:
    bundle = _bundle(owner)
    key_id = _add(owner, bundle["id"], name="K", value="v")["keys"][0]["id"]
    assert owner.delete(f"/api/v1/bundles/{bundle['id']}").status_code == 204
    assert db.session.query(BundleKey).count() == 0
    key = owner.get(f"/api/v1/keys/{key_id}").get_json()
    assert key["bundle_count"] == 0


def test_unknown_bundle_is_404_everywhere(owner) -> None:
    for method, path, body in [
        ("GET", "/api/v1/bundles/missing", None),
        ("PATCH", "/api/v1/bundles/missing", {"description": "x"}),
        ("DELETE", "/api/v1/bundles/missing", None),
        ("POST", "/api/v1/bundles/missing/keys", {"name": "A", "value": "v"}),
        ("DELETE", "/api/v1/bundles/missing/keys/k", None),
        ("POST", "/api/v1/bundles/missing/import", {"format": "json", "content": "{}"}),
        ("GET", "/api/v1/bundles/missing/export", None),
    ]:
        response = owner.call(method, path, body)
        assert response.status_code == 404, (method, path)
        assert response.get_json()["error"] == "not_found"


def test_writes_are_audited_with_names_only(owner) -> None:
    bundle = _bundle(owner)
    key_id = _add(owner, bundle["id"], name="K", value="audit-canary-value")["keys"][0]["id"]
    owner.patch(f"/api/v1/bundles/{bundle['id']}", {"description": "d"})
    owner.delete(f"/api/v1/bundles/{bundle['id']}/keys/{key_id}")
    owner.post(f"/api/v1/bundles/{bundle['id']}/keys", {"key_id": key_id})
    owner.delete(f"/api/v1/bundles/{bundle['id']}")
    events = db.session.query(AuditEvent).order_by(AuditEvent.id).all()
    assert [e.action for e in events] == [
        "bundle.created",
        "key.created",
        "bundle.key_attached",
        "bundle.updated",
        "bundle.key_detached",
        "bundle.key_attached",
        "bundle.deleted",
    ]
    assert {e.actor for e in events} == {"u-owner"}
    assert events[0].target == f"bundle:{bundle['id']}"
    assert events[2].details == {"bundle": "production/api", "key_id": key_id, "key": "K"}
    assert "audit-canary-value" not in repr([(e.details, e.target) for e in events])


IMPORT = {"format": "json", "content": "{}"}
# (method, path template, body) in an order the admin can run them one after the other.
ROUTES = [
    ("GET", "/api/v1/bundles", None),
    ("GET", "/api/v1/bundles/{b}", None),
    ("GET", "/api/v1/bundles/{b}/export", None),
    ("POST", "/api/v1/bundles", {"name": "new"}),
    ("PATCH", "/api/v1/bundles/{b}", {"description": "x"}),
    ("POST", "/api/v1/bundles/{b}/keys", {"name": "N", "value": "v"}),
    ("POST", "/api/v1/bundles/{b}/import", IMPORT),
    ("DELETE", "/api/v1/bundles/{b}/keys/{k}", None),
    ("DELETE", "/api/v1/bundles/{b}", None),
]
EXPECTED = {
    "viewer": [200, 200, 403, 403, 403, 403, 403, 403, 403],
    "member": [200, 200, 200, 403, 403, 403, 403, 403, 403],
    "admin": [200, 200, 200, 201, 200, 201, 200, 204, 204],
}


@pytest.mark.parametrize("role", list(EXPECTED))
def test_roles(signed_as, owner, role: str) -> None:
    bundle = _bundle(owner)
    key_id = _add(owner, bundle["id"], name="K", value="v")["keys"][0]["id"]
    client = signed_as(f"u-{role}", "t-a", role)
    for (method, path, body), expected in zip(ROUTES, EXPECTED[role], strict=True):
        before = _state()
        response = client.call(method, path.format(b=bundle["id"], k=key_id), body)
        assert response.status_code == expected, (role, method, path, response.get_json())
        if expected == 403:
            assert response.get_json()["error"] == "forbidden"
            assert _state() == before, (role, method, path)


def test_every_bundle_route_is_in_the_openapi_document(api_client) -> None:
    spec = api_client.get("/api/v1/openapi.json").get_json()
    paths = spec["paths"]
    assert set(paths["/api/v1/bundles"]) == {"get", "post"}
    assert set(paths["/api/v1/bundles/{bundle_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/api/v1/bundles/{bundle_id}/keys"]) == {"post"}
    assert set(paths["/api/v1/bundles/{bundle_id}/keys/{key_id}"]) == {"delete"}
    assert set(paths["/api/v1/bundles/{bundle_id}/import"]) == {"post"}
    assert set(paths["/api/v1/bundles/{bundle_id}/export"]) == {"get"}
    for name in ("BundleDetail", "BundleKeyAdd", "ImportRequest", "ImportResult", "BundleList"):
        assert name in spec["components"]["schemas"]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = [
    "name",
    "description",
    "tags",
    "key_id",
    "value",
    "is_secret",
    "required",
    "position",
    "format",
    "content",
    "overwrite",
    "tenant_id",
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    target=st.sampled_from(["create", "patch", "keys", "import", "key_create", "key_patch"]),
    body=st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=8), _JSON, max_size=5),
)
def test_arbitrary_json_bodies_never_cause_a_5xx(
    owner: SignedClient, target: str, body: dict[str, object]
) -> None:
    bundle = owner.get("/api/v1/bundles?q=fuzz-home").get_json()["bundles"]
    bundle_id = bundle[0]["id"] if bundle else _bundle(owner, "fuzz-home")["id"]
    method, path = {
        "create": ("POST", "/api/v1/bundles"),
        "patch": ("PATCH", f"/api/v1/bundles/{bundle_id}"),
        "keys": ("POST", f"/api/v1/bundles/{bundle_id}/keys"),
        "import": ("POST", f"/api/v1/bundles/{bundle_id}/import"),
        "key_create": ("POST", "/api/v1/keys"),
        "key_patch": ("PATCH", "/api/v1/keys/missing"),
    }[target]
    response = owner.call(method, path, body)
    assert response.status_code < 500, (target, response.get_json())
    if response.status_code >= 400:
        assert set(response.get_json()) <= {"error", "message", "details"}
