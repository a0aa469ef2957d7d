"""Clerk events and first-sign-in JIT applied by the service directly, on SQLite and PostgreSQL.

The payload builders here mirror Clerk's documented webhook shapes; the api and
worker tests import them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import update
from sqlalchemy.engine import make_url

from envcat.core.schemas.clerk import ClerkJitRequest
from envcat.models import (
    AuditEvent,
    Bundle,
    Key,
    Membership,
    MembershipRemoval,
    Tenant,
    User,
    WebhookEvent,
    db,
    migrate,
)
from envcat.services import audit, integrity, provisioning
from envcat.services.errors import NotFound
from envcat.services.runtime import create_service_app, current
from tests.support.clerk_events import (
    apply,
    count,
    deleted_data,
    fresh,
    membership_data,
    new_id,
    org_data,
    role_of,
    user_data,
)
from tests.support.settings import POSTGRES_ADMIN_URL, make_settings, postgres_reachable

# ------------------------------------------------------------ Clerk payloads (shared)


# ------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def prov_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One migrated database per backend for this module: every test uses fresh Clerk ids."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('provisioning') / 'envcat.db'}"
        migrate.upgrade(url)
        yield url
        return
    if not postgres_reachable():
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    name = f"envcat_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    pg_url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    rendered = pg_url.render_as_string(hide_password=False)
    migrate.upgrade(rendered)
    yield rendered
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def prov(prov_database: str, redis_base_url: str, redis_dbs: tuple[int, int]) -> Iterator[Flask]:
    """The runtime on the module's database, inside an app context."""
    settings = make_settings(
        prov_database, f"{redis_base_url}/{redis_dbs[0]}", f"{redis_base_url}/{redis_dbs[1]}"
    )
    app = create_service_app(settings)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


# ------------------------------------------------------------ users


def test_user_created_makes_user_personal_tenant_and_owner_membership(prov: Flask) -> None:
    uid = new_id("user")
    assert apply("user.created", user_data(uid, email="Ada@Example.TEST"))
    user = fresh(User, uid)
    assert (user.email, user.name, user.source_updated_at) == (
        "ada@example.test",
        "Ada Lovelace",
        1000,
    )
    tenant = fresh(Tenant, uid)
    assert (tenant.kind, tenant.name, tenant.deleted_at) == ("personal", "Ada Lovelace", None)
    assert role_of(uid, uid) == "owner"


def test_a_processed_event_is_not_applied_again(prov: Flask) -> None:
    uid, event_id = new_id("user"), new_id("msg")
    assert apply("user.created", user_data(uid), event_id) is True
    db.session.execute(update(User).where(User.id == uid).values(name="Changed"))
    db.session.commit()
    assert apply("user.created", user_data(uid), event_id) is False
    assert fresh(User, uid).name == "Changed"
    assert fresh(WebhookEvent, event_id).processed_at is not None


def test_an_unrecorded_event_is_a_no_op(prov: Flask) -> None:
    uid = new_id("user")
    unknown, data = new_id("msg"), user_data(uid)
    mac = integrity.event_mac(unknown, "user.created", data)
    assert provisioning.apply_event(unknown, "user.created", data, mac) is False
    assert fresh(User, uid) is None


def test_name_falls_back_to_username_then_email_for_the_tenant(prov: Flask) -> None:
    uid, other = new_id("user"), new_id("user")
    apply("user.created", user_data(uid, first=None, last=None, username="ada"))
    apply("user.created", user_data(other, first=" ", last=None, username=None))
    assert fresh(User, uid).name == "ada"
    assert fresh(User, other).name is None
    assert fresh(Tenant, other).name == f"{other.lower()}@example.test"


def test_user_updated_applies_newer_and_ignores_older(prov: Flask) -> None:
    uid = new_id("user")
    apply("user.created", user_data(uid, updated_at=1_000))
    apply(
        "user.updated", user_data(uid, first="Augusta", email="new@example.test", updated_at=3_000)
    )
    apply("user.updated", user_data(uid, first="Stale", email="old@example.test", updated_at=2_000))
    user = fresh(User, uid)
    assert (user.name, user.email, user.source_updated_at) == (
        "Augusta Lovelace",
        "new@example.test",
        3000,
    )
    assert fresh(Tenant, uid).name == "Augusta Lovelace"


def test_email_taken_by_another_user_keeps_the_old_one_and_logs_ids_only(
    prov: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    holder, uid = new_id("user"), new_id("user")
    apply("user.created", user_data(holder, email="shared@example.test"))
    caplog.set_level(logging.WARNING, logger="envcat.provisioning")
    apply("user.created", user_data(uid, email="shared@example.test"))
    assert fresh(User, uid).email == provisioning.placeholder_email(uid)
    apply("user.updated", user_data(uid, email="mine@example.test", updated_at=2_000))
    apply("user.updated", user_data(uid, email="shared@example.test", updated_at=3_000))
    assert fresh(User, uid).email == "mine@example.test"
    assert fresh(User, holder).email == "shared@example.test"
    records = [r for r in caplog.records if r.name == "envcat.provisioning"]
    assert records and all(getattr(r, "other_user", None) == holder for r in records)
    assert "shared@example.test" not in caplog.text
    assert "shared@example.test" not in str([vars(r) for r in records])


def test_an_email_taken_between_the_check_and_the_insert_gets_the_placeholder(
    prov: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a concurrent sign-in opens: the address looked free, then another user took it."""
    holder, uid = new_id("user"), new_id("user")
    apply("user.created", user_data(holder, email="raced@example.test"))
    monkeypatch.setattr(provisioning, "_free_email", lambda _user, email: email)
    apply("user.created", user_data(uid, email="raced@example.test"))
    assert fresh(User, uid).email == provisioning.placeholder_email(uid)
    assert fresh(User, holder).email == "raced@example.test"
    assert role_of(uid, uid) == "owner"


def test_a_clerk_slug_taken_between_the_check_and_the_insert_gets_a_made_one(
    prov: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = new_id("org"), new_id("org")
    apply("organization.created", {**org_data(first, "Raced"), "slug": "raced-slug"})
    assert fresh(Tenant, first).slug == "raced-slug"
    monkeypatch.setattr(provisioning, "_clerk_slug", lambda org: {"slug": org.slug})
    apply("organization.created", {**org_data(second, "Raced"), "slug": "raced-slug"})
    assert fresh(Tenant, second).slug not in (None, "raced-slug")
    assert fresh(Tenant, second).name == "Raced"


def _seed_tenant_data(tenant_id: str) -> None:
    key = Key(id=str(uuid.uuid4()), tenant_id=tenant_id, name="API_TOKEN", is_secret=True)
    key.value = current().keyring.encrypt("canary-value", tenant_id=tenant_id, key_id=key.id)
    db.session.add(key)
    db.session.add(Bundle(tenant_id=tenant_id, name="production/api"))
    db.session.commit()
    audit.record(tenant_id, "someone", "bundle.created", "production/api")


def test_user_deleted_soft_deletes_and_purges_the_personal_tenant(prov: Flask) -> None:
    uid, org = new_id("user"), new_id("org")
    apply("user.created", user_data(uid))
    apply("organizationMembership.created", membership_data(org, uid, "org:admin"))
    _seed_tenant_data(uid)
    assert apply("user.deleted", deleted_data(uid))
    user = fresh(User, uid)
    assert user.deleted_at is not None
    assert (user.email, user.name) == (provisioning.placeholder_email(uid), None)
    assert fresh(Tenant, uid).deleted_at is not None
    assert count(Bundle, Bundle.tenant_id == uid) == 0
    assert count(Key, Key.tenant_id == uid) == 0
    assert count(Membership, Membership.user_id == uid) == 0
    assert count(AuditEvent, AuditEvent.tenant_id == uid) == 1  # the audit log stays
    assert fresh(Tenant, org).deleted_at is None  # the organisation is not the user's to delete


def test_updates_after_delete_never_resurrect_the_user(prov: Flask) -> None:
    uid = new_id("user")
    apply("user.created", user_data(uid, updated_at=1_000))
    apply("user.deleted", deleted_data(uid))
    apply("user.updated", user_data(uid, first="Back", updated_at=9_000))
    apply("organizationMembership.created", membership_data(new_id("org"), uid, updated_at=9_000))
    user = fresh(User, uid)
    assert user.deleted_at is not None and user.name is None
    assert count(Membership, Membership.user_id == uid) == 0


def test_delete_arriving_before_create_leaves_a_deleted_user(prov: Flask) -> None:
    uid = new_id("user")
    apply("user.deleted", deleted_data(uid))
    apply("user.created", user_data(uid))
    assert fresh(User, uid).deleted_at is not None
    assert count(Membership, Membership.user_id == uid) == 0


# ------------------------------------------------------------ organisations


def test_organization_lifecycle_with_stale_update_and_no_resurrection(prov: Flask) -> None:
    org, uid = new_id("org"), new_id("user")
    apply("organization.created", org_data(org, "Acme", updated_at=1_000))
    apply("organization.updated", org_data(org, "Acme Inc", updated_at=3_000))
    apply("organization.updated", org_data(org, "Old name", updated_at=2_000))
    tenant = fresh(Tenant, org)
    assert (tenant.kind, tenant.name, tenant.source_updated_at) == ("org", "Acme Inc", 3000)
    apply("organizationMembership.created", membership_data(org, uid, updated_at=4_000))
    _seed_tenant_data(org)
    apply("organization.deleted", deleted_data(org, "organization"))
    assert fresh(Tenant, org).deleted_at is not None
    assert count(Bundle, Bundle.tenant_id == org) == count(Key, Key.tenant_id == org) == 0
    assert count(Membership, Membership.tenant_id == org) == 0
    apply("organization.updated", org_data(org, "Zombie", updated_at=9_000))
    apply("organizationMembership.created", membership_data(org, uid, updated_at=9_000))
    assert fresh(Tenant, org).name == "Acme Inc"
    assert role_of(uid, org) is None
    assert role_of(uid, uid) == "owner"  # the member's own workspace is untouched


# ------------------------------------------------------------ memberships


@pytest.mark.parametrize(
    ("clerk_role", "role"),
    [
        ("org:admin", "admin"),
        ("org:member", "member"),
        ("org:billing_manager", "viewer"),
        ("", "viewer"),
    ],
)
def test_membership_for_unknown_user_and_org_creates_both_with_mapped_role(
    prov: Flask, clerk_role: str, role: str
) -> None:
    org, uid = new_id("org"), new_id("user")
    apply(
        "organizationMembership.created", membership_data(org, uid, clerk_role, org_name="Initech")
    )
    assert role_of(uid, org) == role
    assert (fresh(Tenant, org).kind, fresh(Tenant, org).name) == ("org", "Initech")
    user = fresh(User, uid)
    assert (user.name, user.email) == ("Grace Hopper", provisioning.placeholder_email(uid))
    assert role_of(uid, uid) == "owner"
    # The user's own event fills in the rest later: no duplicate, no error.
    apply("user.created", user_data(uid, first="Grace", last="Hopper"))
    assert fresh(User, uid).email == f"{uid.lower()}@example.test"


def test_role_changes_apply_in_clerk_order(prov: Flask) -> None:
    org, uid = new_id("org"), new_id("user")
    apply(
        "organizationMembership.created", membership_data(org, uid, "org:member", updated_at=1_000)
    )
    apply(
        "organizationMembership.updated", membership_data(org, uid, "org:admin", updated_at=3_000)
    )
    apply(
        "organizationMembership.updated", membership_data(org, uid, "org:member", updated_at=2_000)
    )
    assert role_of(uid, org) == "admin"


def test_removed_membership_is_not_granted_again_by_a_late_event(prov: Flask) -> None:
    org, uid = new_id("org"), new_id("user")
    apply("organizationMembership.created", membership_data(org, uid, updated_at=1_000))
    apply("organizationMembership.deleted", membership_data(org, uid, updated_at=2_000))
    assert role_of(uid, org) is None
    apply(
        "organizationMembership.created", membership_data(org, uid, "org:admin", updated_at=1_000)
    )
    apply(
        "organizationMembership.updated", membership_data(org, uid, "org:admin", updated_at=2_000)
    )
    assert role_of(uid, org) is None
    # Invited again later: a newer membership counts, and the removal record goes.
    apply("organizationMembership.created", membership_data(org, uid, updated_at=5_000))
    assert role_of(uid, org) == "member"
    assert fresh(MembershipRemoval, (uid, org)) is None


def test_late_delete_does_not_remove_a_newer_membership(prov: Flask) -> None:
    org, uid = new_id("org"), new_id("user")
    apply("organizationMembership.created", membership_data(org, uid, updated_at=5_000))
    apply("organizationMembership.deleted", membership_data(org, uid, updated_at=2_000))
    assert role_of(uid, org) == "member"


def test_malformed_event_data_fails_loudly_and_stays_unprocessed(prov: Flask) -> None:
    event_id = new_id("msg")
    secret_looking = "canary-name@example.test"
    with pytest.raises(ValueError, match="updated_at") as raised:
        apply("user.created", {"id": new_id("user"), "first_name": [secret_looking]}, event_id)
    assert secret_looking not in str(raised.value)  # fields are named, values never quoted
    db.session.rollback()
    assert fresh(WebhookEvent, event_id).processed_at is None
    with pytest.raises(ValueError, match="not a provisioning event"):
        provisioning.apply_event(event_id, "session.created", {}, "")


# ------------------------------------------------------------ first sign-in (JIT)


def jit(**claims: Any) -> Any:
    return provisioning.provision_session(ClerkJitRequest(**claims))


def test_jit_creates_the_personal_account_once(prov: Flask) -> None:
    uid = new_id("user")
    first = jit(user_id=uid, email="Jo@Example.test", name="Jo")
    again = jit(user_id=uid, email="other@example.test", name="Someone else")
    assert first == again
    assert first.model_dump() == {
        "user": {"id": uid, "email": "jo@example.test", "name": "Jo"},
        "tenant": {"id": uid, "name": "Jo", "kind": "personal", "slug": "jo"},
        "role": "owner",
    }


def test_jit_with_an_org_creates_the_membership_but_never_changes_it(prov: Flask) -> None:
    uid, org = new_id("user"), new_id("org")
    account = jit(user_id=uid, org_id=org, org_name="Acme", org_role="org:admin")
    assert (account.tenant.id, account.tenant.kind, account.tenant.name, account.role) == (
        org,
        "org",
        "Acme",
        "admin",
    )
    assert account.user.email == provisioning.placeholder_email(uid)
    assert jit(user_id=uid, org_id=org, org_role="org:member").role == "admin"
    assert jit(user_id=new_id("user"), org_id=org, org_role="org:owner_custom").role == "viewer"


def test_jit_then_webhooks_merge(prov: Flask) -> None:
    uid, org = new_id("user"), new_id("org")
    jit(
        user_id=uid,
        email="jo@example.test",
        name="Jo",
        org_id=org,
        org_name="A",
        org_role="org:admin",
    )
    apply("user.created", user_data(uid, email="jo@example.test", first="Joanna", last=None))
    apply("organization.created", org_data(org, "Acme"))
    apply("organizationMembership.created", membership_data(org, uid, "org:member"))
    assert count(User, User.id == uid) == 1
    assert fresh(User, uid).name == "Joanna"
    assert fresh(Tenant, org).name == "Acme"
    assert role_of(uid, org) == "member"  # Clerk's word wins over the session's claim


def test_jit_refuses_deleted_users_orgs_and_removed_memberships(prov: Flask) -> None:
    uid, org = new_id("user"), new_id("org")
    apply("user.deleted", deleted_data(uid))
    with pytest.raises(provisioning.AccountDeleted):
        jit(user_id=uid)
    other = new_id("user")
    apply("organization.deleted", deleted_data(org, "organization"))
    with pytest.raises(NotFound):
        jit(user_id=other, org_id=org)
    live_org = new_id("org")
    apply("organizationMembership.created", membership_data(live_org, other, updated_at=1_000))
    apply("organizationMembership.deleted", membership_data(live_org, other, updated_at=2_000))
    with pytest.raises(NotFound):
        jit(user_id=other, org_id=live_org, org_role="org:admin")
    assert role_of(other, live_org) is None
    assert jit(user_id=other).tenant.id == other  # the personal workspace still works


def test_nothing_joins_someone_elses_personal_workspace(prov: Flask) -> None:
    owner, intruder = new_id("user"), new_id("user")
    apply("user.created", user_data(owner))
    with pytest.raises(NotFound):
        jit(user_id=intruder, org_id=owner, org_role="org:admin")
    apply("organizationMembership.created", membership_data(owner, intruder, "org:admin"))
    assert role_of(intruder, owner) is None
    assert fresh(Tenant, owner).kind == "personal"
