"""Admin service tokens: `envcat plan`/`apply` from CI without a person (issue #16).

A token with the `admin` scope (alone) acts through the real bff as `token:<id>` with
the admin role in its own workspace, on the bundles-as-code routes only; the api checks
the same table again. Each refusal is replayed as its attack: a release or scan token,
value and decision routes, another workspace's token, a revoked or expired token, and
a forged signed call that bypasses the bff.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from envcat.models import AuditEvent, ServiceToken, db, utcnow
from tests.support.bundles_as_code import bundles_of, envcat_runner, state_of, write_code
from tests.support.signed import add_member
from tests.support.stack import LiveStack, live_stack

PASSWORD = "correct horse battery staple"  # a test account's password


@pytest.fixture
def stack(database_url: str, redis_url: str, broker_url: str) -> Iterator[LiveStack]:
    with live_stack(database_url, redis_url, broker_url) as running:
        yield running


@pytest.fixture
def small_stack(sqlite_url: str, redis_url: str, broker_url: str) -> Iterator[LiveStack]:
    """SQLite, with an admin token allowed 6 api calls a minute (to see the 429)."""
    with live_stack(sqlite_url, redis_url, broker_url, service_token_admin_rate_limit=6) as running:
        yield running


def _token(api: httpx.Client, **body: Any) -> dict[str, Any]:
    created = api.post("/api/v1/service-tokens", json={"name": "ci apply", **body})
    assert created.status_code == 201, created.text
    reply: dict[str, Any] = created.json()
    return reply


def _bearer(stack: LiveStack, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.bff_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _workspace(stack: LiveStack, email: str) -> tuple[str, str, str]:
    account = stack.sign_up(email, PASSWORD)
    return account["tenant"]["slug"], account["tenant"]["id"], account["user"]["id"]


def test_plan_apply_round_trip_with_an_admin_token(stack: LiveStack, tmp_path: Path) -> None:
    slug, tenant, user = _workspace(stack, "ada@example.test")
    bob = stack.sign_up("bob@example.test", PASSWORD)
    with stack.api_app.app_context():
        add_member(bob["user"]["id"], tenant, "member")
    with stack.signed(user, tenant) as api:
        for name in ("DATABASE_URL", "STRIPE_LIVE_KEY"):
            assert api.post("/api/v1/keys", json={"name": name, "value": "v"}).status_code == 201
        api.post("/api/v1/bundles", json={"name": "legacy/app"})
        token = _token(api, scopes=["admin"])
    assert token["bundle_id"] is None and token["scopes"] == ["admin"]
    code = tmp_path / "envcat.toml"
    write_code(code, "bob@example.test")
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "ENVCAT_TOKEN": token["token"]}
    envcat = envcat_runner(stack, code, slug, environ)

    planned = envcat("plan")
    assert planned.exit_code == 0, planned.output
    assert "+ bundle production/api" in planned.stdout
    applied = envcat("apply", "--prune")
    assert applied.exit_code == 0, applied.output
    state = state_of(stack, user, tenant)
    assert state["bundles"] == {"production/api"}
    assert state["approvers"] == ("admin", ["bob@example.test"], True)
    assert state["policies"] == [("deploy from main", "automatic", ["DATABASE_URL"], True)]
    again = envcat("apply")
    assert again.exit_code == 0 and "No changes" in again.stdout

    with stack.api_app.app_context():
        events = db.session.execute(
            select(AuditEvent.actor, AuditEvent.action, AuditEvent.details).where(
                AuditEvent.tenant_id == tenant
            )
        ).all()
    actor = f"token:{token['id']}"
    assert {"bundle.created", "bundle.deleted"} <= {a for who, a, _ in events if who == actor}
    used = [d for who, a, d in events if a == "service_token.used" and who == actor]
    assert used and all(d["name"] == "ci apply" and d["scope"] == "admin" for d in used)
    assert any(d["call"].startswith("POST bundles") for d in used)


def test_admin_tokens_are_refused_everywhere_but_bundles_as_code(
    small_stack: LiveStack, tmp_path: Path
) -> None:
    stack = small_stack
    slug, tenant, user = _workspace(stack, "ada@example.test")
    other_slug, other_tenant, other_user = _workspace(stack, "eve@example.test")
    with stack.signed(user, tenant) as api:
        key = api.post("/api/v1/keys", json={"name": "DB", "value": "canary-admin-db-0x"}).json()
        bundle = api.post("/api/v1/bundles", json={"name": "app"}).json()
        api.post(f"/api/v1/bundles/{bundle['id']}/keys", json={"key_id": key["id"]})
        admin = _token(api, scopes=["admin"])
        release = _token(api, name="deploy", bundle_id=bundle["id"])
        scan = _token(api, name="scan", scopes=["scan"])
        mixed = api.post(
            "/api/v1/service-tokens", json={"name": "x", "scopes": ["admin", "release"]}
        )
        bound = api.post(
            "/api/v1/service-tokens",
            json={"name": "y", "scopes": ["admin"], "bundle_id": bundle["id"]},
        )
    assert mixed.status_code == 400 and bound.status_code == 400  # admin stands alone
    with stack.signed(other_user, other_tenant) as api:
        rival = _token(api, scopes=["admin"])

    for token in (release, scan):  # another scope is no admin scope
        with _bearer(stack, token["token"]) as client:
            assert client.get("/api/v1/bundles").status_code == 403

    with _bearer(stack, admin["token"]) as client:
        refused = [
            ("GET", f"/api/v1/keys/{key['id']}?reveal=true"),
            ("GET", f"/api/v1/keys/{key['id']}"),
            ("GET", f"/api/v1/keys/{key['id']}/versions"),
            ("GET", f"/api/v1/bundles/{bundle['id']}/export?format=dotenv"),
            ("POST", f"/api/v1/bundles/{bundle['id']}/import/preview"),
            ("POST", "/api/v1/requests/r-1/encrypt-from-bundle"),
            ("POST", "/api/v1/requests/r-1/deny"),
            ("PATCH", f"/api/v1/members/{user}"),
            ("DELETE", f"/api/v1/members/{user}"),
            ("POST", "/api/v1/invites"),
            ("GET", "/api/v1/me"),
            ("POST", "/api/v1/service-tokens"),
            ("GET", "/api/v1/passkeys"),
            ("POST", "/api/v1/keys"),
        ]
        for method, path in refused:
            reply = client.request(method, path, json={})
            assert reply.status_code == 403, (method, path, reply.text)
            assert "canary-admin-db-0x" not in reply.text
        listed = client.get("/api/v1/bundles")  # the refusals above never reached the api
        assert [b["name"] for b in listed.json()["bundles"]] == ["app"]

    # Another workspace's admin token: its own workspace only, and the CLI refuses to mix.
    with _bearer(stack, rival["token"]) as client:
        assert client.get(f"/api/v1/bundles/{bundle['id']}").status_code == 404
    code = tmp_path / "envcat.toml"
    write_code(code, "ada@example.test")
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "ENVCAT_TOKEN": rival["token"]}
    crossed = envcat_runner(stack, code, slug, environ)("apply")
    assert crossed.exit_code == 1 and f"for workspace {other_slug}, not {slug}" in crossed.stderr
    assert bundles_of(stack, user, tenant) == {"app"}
    assert bundles_of(stack, other_user, other_tenant) == set()

    # Bypassing the bff: the api checks the synthetic caller and its routes again.
    with stack.signed(f"token:{admin['id']}", tenant) as forged:
        assert forged.get(f"/api/v1/keys/{key['id']}?reveal=true").status_code == 403
        assert forged.post("/api/v1/requests/r-1/deny").status_code == 403
    with stack.signed(f"token:{admin['id']}", other_tenant) as forged:
        assert forged.get("/api/v1/bundles").status_code == 401  # not that workspace's token

    with _bearer(stack, admin["token"]) as client:
        # 13 calls hold 7 in one minute even when a minute boundary splits them
        codes = [client.get("/api/v1/bundles").status_code for _ in range(13)]
        assert 429 in codes and set(codes) == {200, 429}  # rate-limited per token

    with stack.api_app.app_context():
        db.session.execute(
            update(ServiceToken)
            .where(ServiceToken.id == admin["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    with _bearer(stack, admin["token"]) as client:
        assert client.get("/api/v1/bundles").status_code == 401  # expired
    with stack.signed(user, tenant) as api:
        assert api.delete(f"/api/v1/service-tokens/{rival['id']}").status_code == 404
    with stack.signed(other_user, other_tenant) as api:
        assert api.delete(f"/api/v1/service-tokens/{rival['id']}").status_code == 204
    with _bearer(stack, rival["token"]) as client:
        assert client.get("/api/v1/bundles").status_code == 401  # revoked
