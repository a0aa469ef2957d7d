"""POST /api/v1/internal/clerk/jit: the bff provisions a Clerk user on first sign-in."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from envcat.core import signing
from envcat.core.settings import Settings
from envcat.models import Membership, User, db
from envcat.services.provisioning import placeholder_email
from tests.support.clerk_events import (
    apply,
    deleted_data,
    membership_data,
    new_id,
    user_data,
)
from tests.support.settings import make_settings
from tests.support.signed import SignedClient
from tests.support.webhooks import WEBHOOK_SECRET, api_on, send_and_wait, signed

URL = "/api/v1/internal/clerk/jit"


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(sqlite_url, redis_url, broker_url, clerk_webhook_secret=WEBHOOK_SECRET)


def bff(app: Flask, settings: Settings) -> SignedClient:
    return signed(app, settings, signing.BFF_USER_ID, signing.NO_TENANT)


def jit(app: Flask, settings: Settings, **claims: Any) -> Any:
    return bff(app, settings).post(URL, claims)


def test_first_sign_in_creates_the_personal_account(api_app: Flask, settings: Settings) -> None:
    uid = new_id("user")
    response = jit(api_app, settings, user_id=uid, email="Jo@Example.test", name="Jo")
    assert (response.status_code, response.json) == (
        200,
        {
            "user": {"id": uid, "email": "jo@example.test", "name": "Jo"},
            "tenant": {"id": uid, "name": "Jo", "kind": "personal", "slug": "jo"},
            "role": "owner",
        },
    )
    me = signed(api_app, settings, uid, uid).get("/api/v1/me")
    assert (me.status_code, me.json) == (200, response.json)


def test_sign_in_with_an_org_returns_the_org_tenant(api_app: Flask, settings: Settings) -> None:
    uid, org = new_id("user"), new_id("org")
    response = jit(
        api_app, settings, user_id=uid, org_id=org, org_name="Acme", org_role="org:member"
    )
    assert response.status_code == 200, response.json
    assert (response.json["tenant"], response.json["role"]) == (
        {"id": org, "name": "Acme", "kind": "org", "slug": "acme"},
        "member",
    )
    assert response.json["user"]["email"] == placeholder_email(uid)
    me = signed(api_app, settings, uid, org).get("/api/v1/me")
    assert me.json == response.json
    assert signed(api_app, settings, uid, uid).get("/api/v1/me").get_json()["role"] == "owner"


@pytest.mark.parametrize(
    "claims",
    [{}, {"user_id": ""}, {"user_id": "user with spaces"}, {"user_id": "u" * 129}, {"user_id": 7}],
    ids=["missing", "empty", "spaces", "too-long", "not-a-string"],
)
def test_malformed_claims_are_400(api_app: Flask, settings: Settings, claims: Any) -> None:
    response = bff(api_app, settings).post(URL, claims)
    assert response.status_code == 400
    assert response.json is not None and response.json["error"] == "validation_error"


def test_a_malformed_email_claim_is_not_stored(api_app: Flask, settings: Settings) -> None:
    uid = new_id("user")
    response = jit(api_app, settings, user_id=uid, email="not an email")
    assert response.json["user"]["email"] == placeholder_email(uid)


def test_only_the_bff_identity_may_call_it(api_app: Flask, settings: Settings) -> None:
    uid = new_id("user")
    unsigned = api_app.test_client().post(URL, json={"user_id": uid})
    as_user = signed(api_app, settings, uid, uid).post(URL, {"user_id": uid})
    assert (unsigned.status_code, as_user.status_code) == (401, 401)
    assert db.session.get(User, uid) is None


def test_deleted_user_is_refused(api_app: Flask, settings: Settings) -> None:
    uid = new_id("user")
    apply("user.deleted", deleted_data(uid))
    response = jit(api_app, settings, user_id=uid, email="back@example.test")
    assert response.status_code == 401
    assert response.json is not None and response.json["error"] == "account_deleted"


def test_deleted_org_and_removed_membership_are_404(api_app: Flask, settings: Settings) -> None:
    uid, gone, left = new_id("user"), new_id("org"), new_id("org")
    apply("organization.deleted", deleted_data(gone, "organization"))
    apply("organizationMembership.created", membership_data(left, uid, updated_at=1))
    apply("organizationMembership.deleted", membership_data(left, uid, updated_at=2))
    assert jit(api_app, settings, user_id=uid, org_id=gone).status_code == 404
    assert jit(api_app, settings, user_id=uid, org_id=left, org_role="org:admin").status_code == 404
    assert db.session.get(Membership, (uid, left)) is None


@pytest.mark.usefixtures("celery_worker")
def test_jit_first_then_webhooks_merge_cleanly(api_app: Flask, settings: Settings) -> None:
    uid, org = new_id("user"), new_id("org")
    claims = {"user_id": uid, "email": "jo@example.test", "name": "Jo", "org_id": org}
    assert jit(api_app, settings, **claims, org_role="org:admin").status_code == 200
    send_and_wait(api_app, "user.created", user_data(uid, email="jo@example.test", first="Joanna"))
    send_and_wait(
        api_app, "organizationMembership.created", membership_data(org, uid, org_name="Acme")
    )
    me = signed(api_app, settings, uid, org).get("/api/v1/me")
    assert me.json == {
        "user": {"id": uid, "email": "jo@example.test", "name": "Joanna Lovelace"},
        # the slug is made once, at JIT, and stays stable when Clerk renames the org
        "tenant": {"id": org, "name": "Acme", "kind": "org", "slug": org.lower().replace("_", "-")},
        "role": "member",  # Clerk's membership event is the source of truth
    }
    assert jit(api_app, settings, **claims).json == me.json
    db.session.rollback()
    users = db.session.execute(select(func.count()).select_from(User).where(User.id == uid))
    assert users.scalar() == 1


def test_concurrent_first_sign_ins_create_one_account(
    database_url: str, settings: Settings
) -> None:
    app = api_on(database_url, settings)
    uid, org = new_id("user"), new_id("org")
    callers = 6
    barrier = threading.Barrier(callers)

    def sign_in(_: int) -> int:
        client = bff(app, settings)
        barrier.wait()
        return client.post(
            URL, {"user_id": uid, "org_id": org, "org_role": "org:admin"}
        ).status_code

    with ThreadPoolExecutor(callers) as pool:
        assert list(pool.map(sign_in, range(callers))) == [200] * callers
    with app.app_context():
        count = select(func.count()).select_from(Membership).where(Membership.user_id == uid)
        assert db.session.execute(count).scalar() == 2  # personal owner + org admin
        db.engine.dispose()
