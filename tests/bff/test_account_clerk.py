"""The account page under Clerk: a link to Clerk's hosted profile, no local forms."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from envcat.bff.views.account import clerk_profile_url
from tests.support.bff import csrf_in, module_stack
from tests.support.clerk import ISSUER, PARTY, PUBLISHABLE_KEY, mint, pem
from tests.support.settings import make_settings
from tests.support.stack import LiveStack


def _key_for(host: str) -> str:
    return "pk_live_" + base64.b64encode(f"{host}$".encode()).decode()


@pytest.mark.parametrize(
    ("publishable_key", "expected"),
    [
        (_key_for("clerk.envcat.test"), "https://accounts.envcat.test/user"),
        (_key_for("brave-cat-12.clerk.accounts.dev"), "https://brave-cat-12.accounts.dev/user"),
        (_key_for("auth.example.org"), None),
        (None, None),
        ("pk_test_not-base64!", None),
    ],
)
def test_clerk_profile_url_comes_from_the_publishable_key(
    publishable_key: str | None, expected: str | None
) -> None:
    settings = make_settings(
        "sqlite://",
        "redis://127.0.0.1:1/0",
        "redis://127.0.0.1:1/1",
        clerk_publishable_key=publishable_key,
    )
    assert clerk_profile_url(settings) == expected


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def clerk_stack(
    redis_base_url: str,
    redis_dbs: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
    signing_key: rsa.RSAPrivateKey,
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url,
        redis_dbs,
        tmp_path_factory,
        auth_provider="clerk",
        clerk_jwt_key=pem(signing_key),
        clerk_issuer=ISSUER,
        clerk_authorized_parties=PARTY,
        clerk_publishable_key=PUBLISHABLE_KEY,
    ) as stack:
        yield stack


def test_a_clerk_account_page_links_to_clerk(
    clerk_stack: LiveStack, signing_key: rsa.RSAPrivateKey
) -> None:
    token = mint(signing_key, sub="user_acct1", email="acct@example.test")
    with httpx.Client(base_url=clerk_stack.bff_url, cookies={"__session": token}) as client:
        page = client.get("/account")
        assert page.status_code == 200, page.text
        assert 'href="https://accounts.envcat.test/user"' in page.text
        assert 'action="/account/password"' not in page.text
        assert 'action="/account/delete"' not in page.text
        token_field = csrf_in(page.text)
        for path in ("/account/password", "/account/delete", "/account/sign-out-everywhere"):
            reply = client.post(path, data={"csrf_token": token_field, "password": "x" * 12})
            assert reply.status_code == 404, path
