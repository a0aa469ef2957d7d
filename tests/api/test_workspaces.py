"""Workspaces by slug: the switcher's list and the owner's rename (issue #11)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.api import REQUESTS, audit_actions
from tests.support.signed import add_member


def test_the_switcher_lists_only_the_callers_workspaces(signed_as: Any) -> None:
    me = signed_as("u-1", "t-home", "owner")
    add_member("u-1", "t-team", "member", kind="org")
    add_member("u-2", "t-elsewhere", "owner")
    listed = me.get("/api/v1/workspaces")
    assert listed.status_code == 200
    assert listed.headers["Cache-Control"] == "no-store"
    body = listed.get_json()
    assert body["current"] == "t-home"
    assert [w["slug"] for w in body["workspaces"]] == ["t-home", "t-team"]


def test_an_owner_renames_the_slug_and_requests_follow_it(
    signed_as: Any, api_client: FlaskClient
) -> None:
    owner = signed_as("u-owner", "t-acme", "owner")
    renamed = owner.patch("/api/v1/workspace", {"slug": "acme"})
    assert renamed.status_code == 200, renamed.get_json()
    assert renamed.get_json()["slug"] == "acme"
    assert audit_actions("t-acme") == [("workspace.renamed", "t-acme")]
    pub = encode_public_key(generate_keypair())
    old = api_client.post(REQUESTS, json={"client_pubkey": pub, "workspace": "t-acme"})
    assert (old.status_code, old.get_json()["error"]) == (404, "unknown_workspace")
    new = api_client.post(REQUESTS, json={"client_pubkey": pub, "workspace": "acme"})
    assert new.status_code == 201


def test_rename_is_owner_only_and_refuses_bad_or_taken_slugs(signed_as: Any) -> None:
    owner = signed_as("u-owner", "t-acme", "owner")
    admin = signed_as("u-admin", "t-acme", "admin")
    signed_as("u-other", "t-taken", "owner")
    assert admin.patch("/api/v1/workspace", {"slug": "mine"}).status_code == 403
    for slug, status in [("Not OK", 400), ("-edge", 400), ("t-taken", 409), ("", 400)]:
        reply = owner.patch("/api/v1/workspace", {"slug": slug})
        assert reply.status_code == status, (slug, reply.get_json())
    assert owner.get("/api/v1/me").get_json()["tenant"]["slug"] == "t-acme"
