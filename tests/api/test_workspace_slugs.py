"""Workspace slugs remembered for a few seconds per api process (issue #14).

Request creation resolves its workspace's slug on every call; the api remembers a live
slug for SLUG_CACHE_SECONDS. What must hold: a slug unknown a moment ago resolves as
soon as the workspace exists (misses are not remembered); this process's own renames
and deletions take effect at once; another process's deletion at most that many
seconds later (the clock is injected: the test steps it instead of sleeping).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.models import Tenant, db, utcnow
from envcat.services.runtime import EXTENSION_KEY
from envcat.services.slug_cache import MAX_SLUGS, SLUG_CACHE_SECONDS, SlugCache
from tests.support import present
from tests.support.api import REQUESTS, ensure_workspace
from tests.support.signed import SignedClient

SIGN_UP = "/api/v1/internal/local-auth/sign-up"
DELETE = "/api/v1/internal/local-auth/delete-account"
PASSWORD = "correct horse battery"


def _create(client: FlaskClient, slug: str) -> tuple[int, str | None]:
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": slug}
    reply = client.post(REQUESTS, json=body)
    return reply.status_code, (reply.get_json() or {}).get("error")


def _clocked(app: Flask) -> list[float]:
    """Give the app's runtime a slug cache on a clock the test moves."""
    now = [1000.0]
    runtime = app.extensions[EXTENSION_KEY]
    slugs = SlugCache(clock=lambda: now[0])
    app.extensions[EXTENSION_KEY] = dataclasses.replace(runtime, slugs=slugs)
    return now


def test_a_new_workspace_resolves_at_once_and_another_process_deletion_within_seconds(
    api_app: Flask, api_client: FlaskClient
) -> None:
    now = _clocked(api_app)
    assert _create(api_client, "t-new") == (404, "unknown_workspace")
    ensure_workspace("t-new")  # made just after a miss: the miss was not remembered
    assert _create(api_client, "t-new") == (201, None)
    # another process (a worker applying Clerk's organization.deleted) retires it
    db.session.execute(update(Tenant).where(Tenant.id == "t-new").values(deleted_at=utcnow()))
    db.session.commit()
    now[0] += SLUG_CACHE_SECONDS - 0.5
    assert _create(api_client, "t-new") == (201, None)  # remembered: a request is a question
    now[0] += 0.5
    assert _create(api_client, "t-new") == (404, "unknown_workspace")


def test_this_processes_rename_and_account_deletion_take_effect_at_once(
    api_app: Flask, api_client: FlaskClient, signed_as: Any, settings: Settings
) -> None:
    _clocked(api_app)  # the clock never moves: only forgetting can make these 404
    owner = signed_as("u-owner", "t-acme", "owner")
    assert _create(api_client, "t-acme") == (201, None)
    assert owner.patch("/api/v1/workspace", {"slug": "acme"}).status_code == 200
    assert _create(api_client, "t-acme") == (404, "unknown_workspace")
    assert _create(api_client, "acme") == (201, None)

    bff = SignedClient(
        api_app.test_client(), settings.bff_shared_secret.get_secret_value(), "bff", "-"
    )
    signed_up = bff.post(SIGN_UP, {"email": "ada@example.com", "password": PASSWORD})
    assert signed_up.status_code == 201, signed_up.get_json()
    personal = signed_up.get_json()["user"]["id"]
    slug = present(db.session.get(Tenant, personal)).slug
    assert _create(api_client, slug) == (201, None)
    deleted = bff.post(DELETE, {"user_id": personal, "password": PASSWORD})
    assert deleted.status_code == 200, deleted.get_json()
    assert _create(api_client, slug) == (404, "unknown_workspace")


def test_the_cache_is_bounded_and_forgets_per_tenant() -> None:
    cache = SlugCache(clock=lambda: 0.0)
    cache.put("a", "t-1")
    cache.put("b", "t-1")
    cache.put("c", "t-2")
    cache.forget_tenant("t-1")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, "t-2")
    for i in range(20_000):
        cache.put(f"s{i}", "t-3")
    assert len(cache) <= MAX_SLUGS
