"""Password change, account deletion and the constant-time sign-up, through the internal api."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from envcat.api import create_app
from envcat.core.settings import Settings
from envcat.models import AuditEvent, Bundle, Membership, Tenant, User, db
from tests.support import present
from tests.support.databases import migrated
from tests.support.signed import SignedClient, add_member

SIGN_UP = "/api/v1/internal/local-auth/sign-up"
SIGN_IN = "/api/v1/internal/local-auth/sign-in"
CHANGE = "/api/v1/internal/local-auth/change-password"
DELETE = "/api/v1/internal/local-auth/delete-account"
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def both_app(database_url: str, settings: Settings) -> Iterator[Flask]:
    """The api on SQLite and on PostgreSQL (skipped when no server answers)."""
    migrated(database_url)
    app = create_app(settings.model_copy(update={"database_url": database_url}))
    with app.app_context():
        yield app


def _bff(api_app: Flask, settings: Settings) -> SignedClient:
    secret = settings.bff_shared_secret.get_secret_value()
    return SignedClient(api_app.test_client(), secret, "bff", "-")


def _sign_up(bff: SignedClient, email: str) -> str:
    reply = bff.post(SIGN_UP, {"email": email, "password": PASSWORD})
    assert reply.status_code == 201, reply.get_json()
    return str(reply.get_json()["user"]["id"])


def _actions(tenant_id: str) -> list[str]:
    statement = select(AuditEvent.action).where(AuditEvent.tenant_id == tenant_id)
    return list(db.session.execute(statement).scalars())


def test_change_password_needs_the_current_one_and_is_audited(
    both_app: Flask, settings: Settings
) -> None:
    bff = _bff(both_app, settings)
    user_id = _sign_up(bff, "ada@example.com")
    wrong = bff.post(
        CHANGE, {"user_id": user_id, "old_password": "not it at all", "new_password": NEW_PASSWORD}
    )
    assert (wrong.status_code, wrong.get_json()["error"]) == (401, "invalid_credentials")
    short = bff.post(CHANGE, {"user_id": user_id, "old_password": PASSWORD, "new_password": "x"})
    assert short.status_code == 400
    assert short.get_json()["message"] == "Use a password of at least 10 characters."
    done = bff.post(
        CHANGE, {"user_id": user_id, "old_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.get_json()
    old = bff.post(SIGN_IN, {"email": "ada@example.com", "password": PASSWORD})
    assert old.status_code == 401
    new = bff.post(SIGN_IN, {"email": "ada@example.com", "password": NEW_PASSWORD})
    assert new.status_code == 200
    assert _actions(user_id) == ["account.password_changed"]
    unknown = bff.post(
        CHANGE, {"user_id": "usr_nobody", "old_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert unknown.status_code == 401


def test_only_the_bff_identity_may_change_passwords(
    api_app: Flask, settings: Settings, signed_as: Any
) -> None:
    bff = _bff(api_app, settings)
    user_id = _sign_up(bff, "ada@example.com")
    as_user = signed_as(user_id, user_id)
    body = {"user_id": user_id, "old_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert as_user.post(CHANGE, body).status_code == 401
    assert bff.post(CHANGE, {**body, "user_id": "../x"}).status_code == 400


def test_deleting_a_personal_account_deletes_its_workspace(
    both_app: Flask, settings: Settings
) -> None:
    bff = _bff(both_app, settings)
    user_id = _sign_up(bff, "ada@example.com")
    db.session.add(Bundle(tenant_id=user_id, name="production/api"))
    db.session.commit()
    wrong = bff.post(DELETE, {"user_id": user_id, "password": "wrong password!"})
    assert wrong.status_code == 401
    assert present(db.session.get(User, user_id)).deleted_at is None
    done = bff.post(DELETE, {"user_id": user_id, "password": PASSWORD})
    assert done.status_code == 200, done.get_json()
    assert done.get_json() == {"user_id": user_id, "deleted_tenants": [user_id]}
    db.session.expire_all()
    user = db.session.get(User, user_id)
    assert user is not None and user.deleted_at is not None
    assert (user.password_hash, user.email) == (None, f"{user_id}@deleted.invalid")
    tenant = db.session.get(Tenant, user_id)
    assert tenant is not None and tenant.deleted_at is not None
    assert db.session.query(Bundle).filter_by(tenant_id=user_id).count() == 0
    assert db.session.query(Membership).filter_by(user_id=user_id).count() == 0
    assert "account.deleted" in _actions(user_id)
    gone = bff.post(SIGN_IN, {"email": "ada@example.com", "password": PASSWORD})
    assert gone.status_code == 401
    # The address is free again: a new account, with a new id.
    assert _sign_up(bff, "ada@example.com") != user_id


def test_the_last_owner_of_a_shared_workspace_cannot_delete_the_account(
    both_app: Flask, settings: Settings
) -> None:
    bff = _bff(both_app, settings)
    user_id = _sign_up(bff, "ada@example.com")
    add_member(user_id, "org_shared", "owner", kind="org")
    add_member("usr_bob", "org_shared", "member", kind="org")
    db.session.commit()
    refused = bff.post(DELETE, {"user_id": user_id, "password": PASSWORD})
    assert (refused.status_code, refused.get_json()["error"]) == (409, "last_owner")
    assert "org_shared" in refused.get_json()["message"]
    db.session.expire_all()
    assert present(db.session.get(User, user_id)).deleted_at is None
    assert present(db.session.get(Tenant, user_id)).deleted_at is None
    # With a second owner the org stays, without this user.
    add_member("usr_bob", "org_shared", "owner", kind="org")
    db.session.commit()
    done = bff.post(DELETE, {"user_id": user_id, "password": PASSWORD})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["deleted_tenants"] == [user_id]
    db.session.expire_all()
    org = db.session.get(Tenant, "org_shared")
    assert org is not None and org.deleted_at is None
    members = db.session.query(Membership).filter_by(tenant_id="org_shared").all()
    assert [(m.user_id, m.role) for m in members] == [("usr_bob", "owner")]
    assert _actions("org_shared") == ["account.deleted"]


def test_a_taken_email_costs_as_much_as_a_new_sign_up(api_app: Flask, settings: Settings) -> None:
    bff = _bff(api_app, settings)
    _sign_up(bff, "taken@example.com")
    counter = iter(range(1000))

    def timed(email: str) -> float:
        start = time.perf_counter()
        status = bff.post(SIGN_UP, {"email": email, "password": PASSWORD}).status_code
        assert status in (201, 409)
        return time.perf_counter() - start

    fresh = statistics.median(timed(f"new{next(counter)}@example.com") for _ in range(5))
    taken = statistics.median(timed("taken@example.com") for _ in range(5))
    # Without hashing first, a taken email answers ~50x faster than a new account.
    assert 0.33 < taken / fresh < 3.0
