"""Local accounts through the internal endpoints, signed with the bff's own identity."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from flask import Flask
from pydantic import SecretStr

from envcat.api import create_app
from envcat.core.settings import Settings
from envcat.models import Membership, Tenant, User, db
from envcat.services.accounts import HASHER
from tests.support import present
from tests.support.signed import SignedClient

SIGN_UP = "/api/v1/internal/local-auth/sign-up"
SIGN_IN = "/api/v1/internal/local-auth/sign-in"
PASSWORD = "correct horse battery"


def _bff(app: Flask, settings: Settings) -> SignedClient:
    return SignedClient(
        app.test_client(), settings.bff_shared_secret.get_secret_value(), "bff", "-"
    )


@pytest.fixture
def bff(api_app: Flask, settings: Settings) -> SignedClient:
    return _bff(api_app, settings)


@pytest.fixture
def variant(api_app: Flask, settings: Settings) -> Iterator[object]:
    """Build a second api on the same database with some settings changed."""

    def make(**changes: object) -> SignedClient:
        changed = settings.model_copy(update=changes)
        app = create_app(changed)
        return _bff(app, changed)

    yield make


def test_sign_up_creates_user_personal_tenant_and_owner_membership(bff) -> None:
    response = bff.post(SIGN_UP, {"email": "  Ada@Example.COM ", "password": PASSWORD})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == {"user", "tenant", "role"}
    assert body["role"] == "owner"
    assert body["user"]["email"] == "ada@example.com"
    assert body["tenant"] == {
        "id": body["user"]["id"],
        "name": "ada@example.com",
        "kind": "personal",
        "slug": "ada",  # made from the email's local part; unique
    }
    user = db.session.get(User, body["user"]["id"])
    assert user is not None and user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert present(db.session.get(Membership, (user.id, user.id))).role == "owner"


def test_the_signed_up_user_can_use_the_api(bff, api_app, settings) -> None:
    body = bff.post(SIGN_UP, {"email": "ada@example.com", "password": PASSWORD}).get_json()
    secret = settings.bff_shared_secret.get_secret_value()
    user = SignedClient(api_app.test_client(), secret, body["user"]["id"], body["tenant"]["id"])
    assert user.get("/api/v1/me").get_json() == body
    assert user.post("/api/v1/bundles", {"name": "mine"}).status_code == 201


def test_sign_in_accepts_the_right_password_in_any_email_case(bff) -> None:
    created = bff.post(SIGN_UP, {"email": "ada@example.com", "password": PASSWORD}).get_json()
    response = bff.post(SIGN_IN, {"email": "ADA@example.com ", "password": PASSWORD})
    assert response.status_code == 200
    assert response.get_json() == created


def test_wrong_credentials_are_401_without_saying_which(bff) -> None:
    bff.post(SIGN_UP, {"email": "ada@example.com", "password": PASSWORD})
    for email, password in [
        ("ada@example.com", "wrong password!"),
        ("ada@example.com", PASSWORD.upper()),
        ("ada@example.com", ""),
        ("nobody@example.com", PASSWORD),
        ("not an email", PASSWORD),
    ]:
        response = bff.post(SIGN_IN, {"email": email, "password": password})
        assert response.status_code == 401, (email, password)
        assert response.get_json()["error"] == "invalid_credentials"
        assert response.get_json()["message"] == "Wrong email or password."


def test_a_user_without_a_password_cannot_sign_in(bff) -> None:
    db.session.add(User(id="user_clerk", email="clerk@example.com", name="C"))
    db.session.commit()
    response = bff.post(SIGN_IN, {"email": "clerk@example.com", "password": PASSWORD})
    assert response.status_code == 401


def test_unknown_emails_cost_as_much_as_wrong_passwords(bff) -> None:
    bff.post(SIGN_UP, {"email": "ada@example.com", "password": PASSWORD})
    bff.post(SIGN_IN, {"email": "warm@example.com", "password": PASSWORD})  # builds the dummy

    def timed(email: str) -> float:
        start = time.perf_counter()
        assert bff.post(SIGN_IN, {"email": email, "password": "wrong password!"}).status_code == 401
        return time.perf_counter() - start

    known = statistics.median(timed("ada@example.com") for _ in range(5))
    unknown = statistics.median(timed("nobody@example.com") for _ in range(5))
    # Without the dummy verification an unknown email answers ~100x faster than a known one.
    assert 0.33 < unknown / known < 3.0


def test_duplicate_email_is_409_case_insensitively(bff) -> None:
    assert bff.post(SIGN_UP, {"email": "ada@example.com", "password": PASSWORD}).status_code == 201
    response = bff.post(SIGN_UP, {"email": "ADA@EXAMPLE.com", "password": "another password"})
    assert response.status_code == 409
    assert response.get_json()["error"] == "conflict"
    assert db.session.query(User).count() == 1
    assert db.session.query(Tenant).count() == 1


BAD_SIGN_UPS: list[dict[str, object]] = [
    {"email": "ada@example.com", "password": "short"},
    {"email": "ada@example.com", "password": "123456789"},
    {"email": "ada", "password": PASSWORD},
    {"email": "ada@example", "password": PASSWORD},
    {"email": "a@b@example.com", "password": PASSWORD},
    {"email": "ada @example.com", "password": PASSWORD},
    {"email": "ada\x00@example.com", "password": PASSWORD},
    {"email": "x" * 400 + "@example.com", "password": PASSWORD},
    {"email": "ada@example.com", "password": "x" * 1025},
    {"email": "ada@example.com", "password": "\ud800" * 12},
    {"email": "ada@example.com", "password": 1234567890},
    {"email": "ada@example.com"},
    {"password": PASSWORD},
    {"email": "ada@example.com", "password": PASSWORD, "role": "owner"},
]


def test_bad_sign_ups_are_400_and_create_nothing(bff) -> None:
    for body in BAD_SIGN_UPS:
        response = bff.post(SIGN_UP, body)
        assert response.status_code == 400, str(body)[:80]
        assert response.get_json()["error"] == "validation_error"
        assert PASSWORD not in response.get_data(as_text=True)
    assert db.session.query(User).count() == 0


def test_sign_up_messages_say_what_to_fix(bff) -> None:
    short = bff.post(SIGN_UP, {"email": "ada@example.com", "password": "short"}).get_json()
    assert short["message"] == "Use a password of at least 10 characters."
    assert short["details"][0]["loc"] == ["password"]
    email = bff.post(SIGN_UP, {"email": "ada@", "password": PASSWORD}).get_json()
    assert email["message"] == "Enter a valid email address, like name@example.com."
    long = bff.post(SIGN_UP, {"email": "ada@example.com", "password": "x" * 1025}).get_json()
    assert long["message"] == "Use a password of at most 1024 characters."
    both = bff.post(SIGN_UP, {"email": "ada", "password": "x"}).get_json()
    assert "email address" in both["message"] and "10 characters" in both["message"]


def test_bad_sign_in_bodies_are_400(bff) -> None:
    for body in (
        {},
        {"email": "a@b.co"},
        {"email": 1, "password": "x"},
        {"email": "a@b.co", "password": None},
        {"email": "a@b.co", "password": "x" * 4097},
    ):
        assert bff.post(SIGN_IN, body).status_code == 400, str(body)[:80]


def test_signup_disabled_is_403_but_sign_in_still_works(bff, variant) -> None:
    bff.post(SIGN_UP, {"email": "ada@example.com", "password": PASSWORD})
    closed = variant(allow_signup=False)
    response = closed.post(SIGN_UP, {"email": "bob@example.com", "password": PASSWORD})
    assert response.status_code == 403
    assert response.get_json()["error"] == "signup_disabled"
    assert db.session.query(User).count() == 1
    assert (
        closed.post(SIGN_IN, {"email": "ada@example.com", "password": PASSWORD}).status_code == 200
    )


def test_local_auth_is_off_under_clerk(variant) -> None:
    clerk = variant(auth_provider="clerk", clerk_jwt_key=SecretStr("pem"))
    for path in (SIGN_UP, SIGN_IN):
        response = clerk.post(path, {"email": "ada@example.com", "password": PASSWORD})
        assert response.status_code == 404
    assert db.session.query(User).count() == 0


def test_only_the_bff_identity_may_call(api_app, settings, signed_as) -> None:
    user = signed_as("u-1", "t-a", "owner")
    assert user.post(SIGN_UP, {"email": "a@b.co", "password": PASSWORD}).status_code == 401
    secret = settings.bff_shared_secret.get_secret_value()
    wrong_tenant = SignedClient(api_app.test_client(), secret, "bff", "t-a")
    assert wrong_tenant.post(SIGN_IN, {"email": "a@b.co", "password": PASSWORD}).status_code == 401
    unsigned = api_app.test_client().post(SIGN_IN, json={"email": "a@b.co", "password": PASSWORD})
    assert unsigned.status_code == 401
    assert db.session.query(User).filter_by(email="a@b.co").count() == 0


def test_outdated_hash_parameters_are_upgraded_on_sign_in(bff) -> None:
    created = bff.post(SIGN_UP, {"email": "ada@example.com", "password": PASSWORD}).get_json()
    user = db.session.get(User, created["user"]["id"])
    assert user is not None
    user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    db.session.commit()
    assert bff.post(SIGN_IN, {"email": "ada@example.com", "password": PASSWORD}).status_code == 200
    db.session.expire_all()
    refreshed = db.session.get(User, created["user"]["id"])
    assert refreshed is not None and refreshed.password_hash is not None
    assert refreshed.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not HASHER.check_needs_rehash(refreshed.password_hash)
    assert bff.post(SIGN_IN, {"email": "ada@example.com", "password": PASSWORD}).status_code == 200
