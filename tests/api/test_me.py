"""GET /me: the caller, the tenant of the signature and the role there."""

from __future__ import annotations

import pytest

from envcat.models import User, db, utcnow
from tests.support.signed import add_member


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_me_answers_the_agreed_shape_for_every_role(signed_as, role: str) -> None:
    client = signed_as("u-1", "org-1", role)
    response = client.get("/api/v1/me")
    assert response.status_code == 200
    assert response.get_json() == {
        "user": {"id": "u-1", "email": "u-1@example.test", "name": "u-1"},
        "tenant": {"id": "org-1", "name": "org-1", "kind": "personal", "slug": "org-1"},
        "role": role,
    }


def test_me_follows_the_signed_tenant(signed_as) -> None:
    signed_as("u-1", "t-personal", "owner")
    add_member("u-1", "t-org", "viewer", kind="org")
    org = signed_as("u-1", "t-org", "viewer").get("/api/v1/me").get_json()
    assert org["tenant"] == {"id": "t-org", "name": "t-org", "kind": "org", "slug": "t-org"}
    assert org["role"] == "viewer"
    personal = signed_as("u-1", "t-personal", "owner").get("/api/v1/me").get_json()
    assert personal["tenant"]["id"] == "t-personal" and personal["role"] == "owner"


def test_outside_the_tenant_is_404(signed_as) -> None:
    client = signed_as("u-1", "t-a", "owner")
    add_member("u-2", "t-b", "owner")
    client.tenant_id = "t-b"
    response = client.get("/api/v1/me")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_a_deleted_user_is_refused(signed_as) -> None:
    client = signed_as("u-1", "t-a", "owner")
    user = db.session.get(User, "u-1")
    assert user is not None
    user.deleted_at = utcnow()
    db.session.commit()
    assert client.get("/api/v1/me").status_code == 401


def test_unsigned_or_forged_calls_are_401(api_client, signed_as) -> None:
    assert api_client.get("/api/v1/me").status_code == 401
    client = signed_as("u-1", "t-a", "owner")
    client.secret = "0" * 64
    assert client.get("/api/v1/me").status_code == 401
