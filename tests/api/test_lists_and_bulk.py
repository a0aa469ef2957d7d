"""Lists that scale (issue #15): paged search of bundles and keys, bulk attach/detach (all or
nothing), and an import preview that writes nothing; on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from envcat.core.settings import Settings
from envcat.models import AuditEvent, BundleKey, Key, db
from tests.support.settings import make_settings


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(database_url, redis_url, broker_url)


@pytest.fixture
def owner(signed_as: Any) -> Any:
    return signed_as("u-owner", "t-a", "owner")


def _key(client: Any, name: str, value: str = "v") -> str:
    response = client.post("/api/v1/keys", {"name": name, "value": value})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _bundle(client: Any, name: str) -> str:
    response = client.post("/api/v1/bundles", {"name": name})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _walk(client: Any, path: str, field: str, **params: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        query = "&".join(
            f"{k}={v}" for k, v in {**params, **({"cursor": cursor} if cursor else {})}.items()
        )
        body = client.get(f"{path}?{query}").get_json()
        pages.append([item["name"] for item in body[field]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_keys_page_in_name_order_with_search_and_a_total(owner: Any, signed_as: Any) -> None:
    names = ["b_KEY", "A_KEY", "a_key2", "C_KEY", "DB_URL", "db_user", "Z"]
    for name in names:
        _key(owner, name)
    _key(signed_as("u-other", "t-b", "owner"), "A_OTHER_TENANT")
    pages = _walk(owner, "/api/v1/keys", "keys", limit="3")
    assert [len(p) for p in pages] == [3, 3, 1]
    assert list(itertools.chain(*pages)) == sorted(names, key=lambda n: (n.lower(), n))
    body = owner.get("/api/v1/keys?q=db&limit=1").get_json()
    assert body["total"] == 2 and len(body["keys"]) == 1
    assert _walk(owner, "/api/v1/keys", "keys", q="db", limit="1") == [["DB_URL"], ["db_user"]]
    assert owner.get("/api/v1/keys?q=%25").get_json()["keys"] == []  # LIKE wildcards are literal
    # without a limit: every key, as before
    assert len(owner.get("/api/v1/keys").get_json()["keys"]) == len(names)


def test_bundles_page_and_bad_paging_input_is_a_400(owner: Any) -> None:
    for name in ("prod/api", "prod/web", "staging/api", "dev"):
        _bundle(owner, name)
    assert _walk(owner, "/api/v1/bundles", "bundles", limit="2") == [
        ["dev", "prod/api"],
        ["prod/web", "staging/api"],
    ]
    assert _walk(owner, "/api/v1/bundles", "bundles", q="API", limit="5") == [
        ["prod/api", "staging/api"]
    ]
    for query in ("limit=0", "limit=501", "cursor=not-ours", "limit=x"):
        response = owner.get(f"/api/v1/bundles?{query}")
        assert response.status_code == 400, query
        assert response.get_json()["error"] == "validation_error"


def _attached(bundle_id: str) -> set[str]:
    db.session.expire_all()
    return {e.key_id for e in db.session.query(BundleKey).filter_by(bundle_id=bundle_id)}


def test_bulk_attach_and_detach_are_all_or_nothing_and_audited(owner: Any, signed_as: Any) -> None:
    bundle_id = _bundle(owner, "prod/api")
    ids = [_key(owner, f"K{n}") for n in range(3)]
    foreign = _key(signed_as("u-other", "t-b", "owner"), "THEIRS")
    path = f"/api/v1/bundles/{bundle_id}/bulk-keys"
    # another tenant's key in the list: 404, and none of the others is attached
    refused = owner.post(path, {"action": "attach", "key_ids": [*ids, foreign]})
    assert refused.status_code == 404
    assert _attached(bundle_id) == set()
    done = owner.post(path, {"action": "attach", "key_ids": ids[:2]})
    assert done.status_code == 200, done.get_json()
    assert [k["name"] for k in done.get_json()["keys"]] == ["K0", "K1"]
    # one already attached: 409, the new one is not attached either
    again = owner.post(path, {"action": "attach", "key_ids": [ids[2], ids[0]]})
    assert again.status_code == 409
    assert _attached(bundle_id) == set(ids[:2])
    # detaching one that is not in the bundle: 404, nothing detached
    assert owner.post(path, {"action": "detach", "key_ids": [ids[0], ids[2]]}).status_code == 404
    assert _attached(bundle_id) == set(ids[:2])
    assert owner.post(path, {"action": "detach", "key_ids": ids[:2]}).status_code == 200
    assert _attached(bundle_id) == set()
    events = [
        (e.action, e.details["keys"])
        for e in db.session.query(AuditEvent).filter(AuditEvent.action.like("bundle.keys_%"))
    ]
    assert events == [
        ("bundle.keys_attached", ["K0", "K1"]),
        ("bundle.keys_detached", ["K0", "K1"]),
    ]
    viewer = signed_as("u-viewer", "t-a", "viewer")
    assert viewer.post(path, {"action": "attach", "key_ids": ids}).status_code == 403
    assert owner.post(path, {"action": "attach", "key_ids": []}).status_code == 400


def _state() -> list[tuple[object, ...]]:
    db.session.expire_all()
    keys = sorted((k.name, k.value, k.is_secret) for k in db.session.query(Key))
    entries = sorted((e.bundle_id, e.key_id) for e in db.session.query(BundleKey))
    return [*keys, *entries, (db.session.query(AuditEvent).count(),)]


def test_import_preview_classifies_each_key_and_writes_nothing(owner: Any) -> None:
    bundle_id = _bundle(owner, "prod/api")
    owner.post(f"/api/v1/bundles/{bundle_id}/keys", {"name": "SAME", "value": "stored-1"})
    owner.post(f"/api/v1/bundles/{bundle_id}/keys", {"name": "DIFF", "value": "stored-canary"})
    _key(owner, "LIB", "lib-value")  # in the library, not in the bundle
    content = "SAME=stored-1\nDIFF=pasted-2\nLIB=lib-value\nNEW_ONE=pasted-3\n1BAD=x\n"
    before = _state()
    body = {"format": "dotenv", "content": content}
    response = owner.post(f"/api/v1/bundles/{bundle_id}/import/preview", body)
    assert response.status_code == 200, response.get_json()
    preview = response.get_json()
    statuses = {k["name"]: (k["status"], k["in_library"], k["applies"]) for k in preview["keys"]}
    assert statuses == {
        "SAME": ("unchanged", True, True),
        "DIFF": ("changed", True, False),  # only with overwrite
        "LIB": ("new", True, True),
        "NEW_ONE": ("new", False, True),
    }
    assert preview["skipped"] == ["1BAD"]
    text = response.get_data(as_text=True)
    assert "stored-canary" not in text and "pasted-2" not in text  # names only
    assert _state() == before  # nothing written, not even an audit event
    # confirm: the per-key secret choice decides the kind of each key it creates
    confirm = {**body, "overwrite": True, "secret_names": []}
    done = owner.post(f"/api/v1/bundles/{bundle_id}/import", confirm)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["updated"] == ["DIFF"]
    created = db.session.query(Key).filter_by(name="NEW_ONE").one()
    assert created.is_secret is False
