"""Tenant B never reaches tenant A's objects, whatever ids, bodies or queries it sends."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from envcat.core import signing
from envcat.core.settings import Settings
from envcat.models import AuditEvent, Bundle, BundleKey, Key, db


def _snapshot(tenant_id: str) -> list[tuple[object, ...]]:
    db.session.expire_all()
    bundles = db.session.query(Bundle).filter_by(tenant_id=tenant_id).all()
    keys = db.session.query(Key).filter_by(tenant_id=tenant_id).all()
    entries = db.session.query(BundleKey).filter(BundleKey.bundle_id.in_([b.id for b in bundles]))
    events = db.session.query(AuditEvent).filter_by(tenant_id=tenant_id).count()
    return (
        sorted((b.id, b.name, b.description, tuple(b.tags), str(b.updated_at)) for b in bundles)
        + sorted((k.id, k.name, k.value, k.is_secret, k.description) for k in keys)
        + sorted((e.bundle_id, e.key_id, e.position, e.required) for e in entries)
        + [("events", events)]
    )


@pytest.fixture
def world(signed_as):
    """Tenants A and B, each with a bundle holding one key of the same name."""
    ids: dict[str, str] = {}
    for tenant in ("a", "b"):
        owner = signed_as(f"owner-{tenant}", f"t-{tenant}", "owner")
        bundle = owner.post("/api/v1/bundles", {"name": "production/api"}).get_json()
        detail = owner.post(
            f"/api/v1/bundles/{bundle['id']}/keys",
            {"name": "DB_PASSWORD", "value": f"secret-of-{tenant}", "is_secret": True},
        ).get_json()
        ids[f"b{tenant.upper()}"] = bundle["id"]
        ids[f"k{tenant.upper()}"] = detail["keys"][0]["id"]
    return ids


def _cross_tenant_calls(ids: dict[str, str]) -> list[tuple[str, str, object]]:
    """Every owned endpoint that takes an id, aimed at tenant A's objects."""
    a, ka, b, kb = ids["bA"], ids["kA"], ids["bB"], ids["kB"]
    return [
        ("GET", f"/api/v1/bundles/{a}", None),
        ("PATCH", f"/api/v1/bundles/{a}", {"description": "pwned"}),
        ("DELETE", f"/api/v1/bundles/{a}", None),
        ("POST", f"/api/v1/bundles/{a}/keys", {"name": "INJECTED", "value": "x"}),
        ("POST", f"/api/v1/bundles/{a}/keys", {"key_id": kb}),
        ("POST", f"/api/v1/bundles/{b}/keys", {"key_id": ka}),
        ("DELETE", f"/api/v1/bundles/{a}/keys/{ka}", None),
        ("DELETE", f"/api/v1/bundles/{b}/keys/{ka}", None),
        ("POST", f"/api/v1/bundles/{a}/import", {"format": "dotenv", "content": "X=1"}),
        ("POST", f"/api/v1/bundles/{a}/import", {"format": "json", "content": '{"X": "1"}'}),
        ("GET", f"/api/v1/bundles/{a}/export?format=dotenv", None),
        ("GET", f"/api/v1/bundles/{a}/export?format=json", None),
        ("GET", f"/api/v1/keys/{ka}", None),
        ("GET", f"/api/v1/keys/{ka}?reveal=true", None),
        ("PATCH", f"/api/v1/keys/{ka}", {"value": "overwritten"}),
        ("DELETE", f"/api/v1/keys/{ka}", None),
    ]


def test_tenant_b_gets_404_on_every_object_of_tenant_a(signed_as, world) -> None:
    b_owner = signed_as("owner-b", "t-b", "owner")
    before = _snapshot("t-a")
    for method, path, body in _cross_tenant_calls(world):
        response = b_owner.call(method, path, body)
        assert response.status_code == 404, (method, path, response.get_json())
        assert response.get_json()["error"] == "not_found", (method, path)
        assert "secret-of-a" not in response.get_data(as_text=True)
    assert _snapshot("t-a") == before


def test_listings_show_only_the_signed_tenant(signed_as, world) -> None:
    b_owner = signed_as("owner-b", "t-b", "owner")
    bundles = b_owner.get("/api/v1/bundles").get_json()["bundles"]
    assert [x["id"] for x in bundles] == [world["bB"]]
    keys = b_owner.get("/api/v1/keys").get_json()["keys"]
    assert [x["id"] for x in keys] == [world["kB"]]
    events = b_owner.get("/api/v1/audit?limit=200").get_json()["events"]
    assert events and all(e["actor"] == "owner-b" for e in events)
    assert b_owner.get("/api/v1/me").get_json()["tenant"]["id"] == "t-b"
    exported = b_owner.get(f"/api/v1/bundles/{world['bB']}/export").data
    assert exported == b'DB_PASSWORD="secret-of-b"\n'


def test_forged_tenant_in_body_or_query_changes_nothing(signed_as, world) -> None:
    b_owner = signed_as("owner-b", "t-b", "owner")
    before_a = _snapshot("t-a")
    forged_bodies = [
        ("POST", "/api/v1/bundles", {"name": "forged", "tenant_id": "t-a"}),
        ("POST", "/api/v1/keys", {"name": "FORGED", "value": "x", "tenant_id": "t-a"}),
        ("PATCH", f"/api/v1/bundles/{world['bB']}", {"tenant_id": "t-a"}),
        ("PATCH", f"/api/v1/keys/{world['kB']}", {"tenant_id": "t-a"}),
        (
            "POST",
            f"/api/v1/bundles/{world['bB']}/keys",
            {"key_id": world["kA"], "tenant_id": "t-a"},
        ),
        (
            "POST",
            f"/api/v1/bundles/{world['bB']}/import",
            {"format": "json", "content": "{}", "tenant_id": "t-a"},
        ),
    ]
    for method, path, body in forged_bodies:
        response = b_owner.call(method, path, body)
        assert response.status_code == 400, (method, path)  # unknown fields are refused
    forged_queries = [
        ("/api/v1/bundles?tenant_id=t-a", 200),
        ("/api/v1/keys?tenant_id=t-a", 200),
        ("/api/v1/audit?tenant_id=t-a", 200),
        ("/api/v1/me?tenant_id=t-a", 200),
        (f"/api/v1/bundles/{world['bA']}?tenant_id=t-a", 404),
        (f"/api/v1/keys/{world['kA']}?reveal=true&tenant_id=t-a", 404),
        (f"/api/v1/bundles/{world['bA']}/export?tenant_id=t-a", 404),
    ]
    for path, expected in forged_queries:
        response = b_owner.get(path)
        assert response.status_code == expected, path
        text = response.get_data(as_text=True)
        assert world["bA"] not in text and world["kA"] not in text and "owner-a" not in text
    assert b_owner.get("/api/v1/me?tenant_id=t-a").get_json()["tenant"]["id"] == "t-b"
    assert _snapshot("t-a") == before_a


def test_signing_for_a_tenant_without_membership_is_404_everywhere(signed_as, world) -> None:
    intruder = signed_as("owner-b", "t-b", "owner")
    intruder.tenant_id = "t-a"  # a valid signature, but owner-b is no member of t-a
    before = _snapshot("t-a")
    calls = [
        *_cross_tenant_calls(world),
        ("GET", "/api/v1/bundles", None),
        ("POST", "/api/v1/bundles", {"name": "new"}),
        ("GET", "/api/v1/keys", None),
        ("POST", "/api/v1/keys", {"name": "NEW", "value": "x"}),
        ("GET", "/api/v1/audit", None),
        ("GET", "/api/v1/me", None),
    ]
    for method, path, body in calls:
        response = intruder.call(method, path, body)
        assert response.status_code == 404, (method, path)
    assert _snapshot("t-a") == before


def test_swapping_the_tenant_header_after_signing_is_401(
    signed_as: Any, world: dict[str, str], api_app: Flask, settings: Settings
) -> None:
    signed_as("owner-b", "t-a", "viewer")  # even a real membership in A does not help
    headers = signing.sign_headers(
        settings.bff_shared_secret.get_secret_value(),
        "owner-b",
        "t-b",
        "GET",
        f"/api/v1/bundles/{world['bA']}",
        "",
        b"",
    )
    headers[signing.HEADER_TENANT] = "t-a"
    response = api_app.test_client().get(f"/api/v1/bundles/{world['bA']}", headers=headers)
    assert response.status_code == 401
    assert "production/api" not in json.dumps(response.get_json())


def test_the_same_names_live_independently_in_each_tenant(signed_as, world) -> None:
    a_owner = signed_as("owner-a", "t-a", "owner")
    b_owner = signed_as("owner-b", "t-b", "owner")
    a_owner.patch(f"/api/v1/keys/{world['kA']}", {"value": "changed-in-a"})
    revealed = b_owner.get(f"/api/v1/keys/{world['kB']}?reveal=true").get_json()
    assert revealed["value"] == "secret-of-b"
    assert b_owner.delete(f"/api/v1/bundles/{world['bB']}").status_code == 204
    assert a_owner.get(f"/api/v1/bundles/{world['bA']}").status_code == 200
