"""envcat.services.accounts against a real database (create-user and the sign-in rules)."""

from __future__ import annotations

import threading

import pytest
from flask import Flask

from envcat.models import Membership, Tenant, User, db
from envcat.services import accounts
from envcat.services.errors import Conflict, ValidationFailed

PASSWORD = "correct horse battery"


def test_create_local_user_returns_the_user_and_personal_tenant(service_app: Flask) -> None:
    user, tenant = accounts.create_local_user("Grace@Example.com", PASSWORD)
    assert isinstance(user, User) and isinstance(tenant, Tenant)
    assert user.email == "grace@example.com"
    assert (tenant.id, tenant.name, tenant.kind) == (user.id, "grace@example.com", "personal")
    assert accounts.HASHER.verify(user.password_hash or "", PASSWORD)
    membership = db.session.get(Membership, (user.id, tenant.id))
    assert membership is not None and membership.role == "owner"


def test_authenticate_returns_the_personal_tenant(service_app: Flask) -> None:
    user, tenant = accounts.create_local_user("grace@example.com", PASSWORD)
    db.session.add(Tenant(id="aaa-org", name="Org", kind="org"))
    db.session.add(Membership(user_id=user.id, tenant_id="aaa-org", role="viewer"))
    db.session.commit()
    result = accounts.authenticate("GRACE@example.com", PASSWORD)
    assert result.tenant.id == tenant.id and result.role == "owner"
    with pytest.raises(accounts.InvalidCredentials):
        accounts.authenticate("grace@example.com", PASSWORD + "!")


@pytest.mark.parametrize(
    ("email", "password"),
    [("grace", PASSWORD), ("grace@example.com", "123456789"), ("", ""), ("a@b\x00.co", PASSWORD)],
)
def test_invalid_input_raises_validation_failed(
    service_app: Flask, email: str, password: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        accounts.create_local_user(email, password)
    assert password not in repr(caught.value.details) or not password
    assert db.session.query(User).count() == 0


def test_a_taken_email_raises_conflict(service_app: Flask) -> None:
    accounts.create_local_user("grace@example.com", PASSWORD)
    with pytest.raises(Conflict):
        accounts.create_local_user("GRACE@EXAMPLE.COM", "different password")
    assert db.session.query(User).count() == 1


def test_concurrent_sign_ups_of_one_email_create_one_account(service_app: Flask) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def sign_up() -> None:
        with service_app.app_context():
            barrier.wait()
            try:
                accounts.create_local_user("race@example.com", PASSWORD)
                outcomes.append("created")
            except Conflict:
                outcomes.append("conflict")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=sign_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "created"]
    assert db.session.query(User).count() == 1
    assert db.session.query(Tenant).count() == 1
    assert db.session.query(Membership).count() == 1
