"""Members, invitations and team workspaces through the real api (issue #17)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select, text

from envcat.api import create_app
from envcat.core.settings import Settings
from envcat.models import Invite, Membership, db
from tests.support.api import audit_actions
from tests.support.databases import migrated
from tests.support.settings import make_settings
from tests.support.signed import SignedClient, add_member


def _invite(admin: Any, email: str, role: str = "member") -> dict[str, Any]:
    reply = admin.post("/api/v1/invites", {"email": email, "role": role})
    assert reply.status_code == 201, reply.get_json()
    body: dict[str, Any] = reply.get_json()
    return body


def test_a_local_user_creates_a_team_workspace_and_owns_it(signed_as: Any) -> None:
    ada = signed_as("u-ada", "u-ada", "owner")
    made = ada.post("/api/v1/workspaces", {"name": "Acme Platform", "slug": "acme"})
    assert made.status_code == 201, made.get_json()
    team = made.get_json()
    assert (team["kind"], team["slug"], team["name"]) == ("org", "acme", "Acme Platform")
    listed = ada.get("/api/v1/workspaces").get_json()["workspaces"]
    assert "acme" in [w["slug"] for w in listed]
    assert _member(("u-ada", team["id"])).role == "owner"
    assert audit_actions(team["id"]) == [("workspace.created", team["id"])]
    taken = ada.post("/api/v1/workspaces", {"name": "Other", "slug": "acme"})
    assert (taken.status_code, taken.get_json()["error"]) == (409, "conflict")
    bad = ada.post("/api/v1/workspaces", {"name": "Other", "slug": "Not OK"})
    assert bad.status_code == 400


def test_invite_then_accept_adds_the_member_and_the_token_is_stored_hashed(
    signed_as: Any,
) -> None:
    owner = signed_as("u-owner", "t-team", "owner")
    bob = signed_as("u-bob", "u-bob", "owner")  # bob's personal workspace; email u-bob@…
    made = _invite(owner, "U-Bob@Example.test", "admin")
    assert made["email"] == "u-bob@example.test" and made["status"] == "pending"
    assert made["link"].endswith(f"/invites/accept?token={made['token']}")
    assert made["emailed"] is False  # no SMTP configured
    dump = " ".join(str(row) for row in db.session.execute(text("SELECT * FROM invites")).all())
    assert made["token"] not in dump
    listed = owner.get("/api/v1/invites").get_json()["invites"]
    assert [i["id"] for i in listed] == [made["id"]] and "token" not in listed[0]
    joined = bob.post("/api/v1/join", {"token": made["token"]})
    assert joined.status_code == 200, joined.get_json()
    assert joined.get_json()["tenant"]["id"] == "t-team"
    assert joined.get_json()["role"] == "admin"
    assert _member(("u-bob", "t-team")).role == "admin"
    roles = {m["user_id"]: m["role"] for m in owner.get("/api/v1/members").get_json()["members"]}
    assert roles == {"u-owner": "owner", "u-bob": "admin"}
    actions = audit_actions("t-team")
    assert ("member.invited", made["id"]) in actions and ("member.joined", "u-bob") in actions
    # single use: the same link again, even by the same person, is gone
    again = bob.post("/api/v1/join", {"token": made["token"]})
    assert (again.status_code, again.get_json()["error"]) == (410, "invite_gone")


def test_wrong_email_expired_revoked_and_forged_invites_are_refused(signed_as: Any) -> None:
    owner = signed_as("u-owner", "t-team", "owner")
    mallory = signed_as("u-mallory", "u-mallory", "owner")
    carol = signed_as("u-carol", "u-carol", "owner")
    for_carol = _invite(owner, "u-carol@example.test")
    stolen = mallory.post("/api/v1/join", {"token": for_carol["token"]})
    assert (stolen.status_code, stolen.get_json()["error"]) == (403, "wrong_invitee")
    assert db.session.get(Membership, ("u-mallory", "t-team")) is None
    forged = carol.post("/api/v1/join", {"token": for_carol["token"] + "x"})
    assert forged.status_code == 404
    # expired: move its expiry into the past rather than sleeping out seven days
    _stored_invite(for_carol["id"]).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    late = carol.post("/api/v1/join", {"token": for_carol["token"]})
    assert (late.status_code, late.get_json()["error"]) == (410, "invite_gone")
    revoked = _invite(owner, "u-carol@example.test")
    assert owner.delete(f"/api/v1/invites/{revoked['id']}").status_code == 204
    assert owner.delete(f"/api/v1/invites/{revoked['id']}").status_code == 409
    refused = carol.post("/api/v1/join", {"token": revoked["token"]})
    assert refused.status_code == 410
    assert db.session.get(Membership, ("u-carol", "t-team")) is None
    assert ("invite.revoked", revoked["id"]) in audit_actions("t-team")


def test_the_last_owner_cannot_be_demoted_or_removed(signed_as: Any) -> None:
    owner = signed_as("u-owner", "t-team", "owner")
    signed_as("u-mem", "t-team", "member")
    demote = owner.patch("/api/v1/members/u-owner", {"role": "admin"})
    assert (demote.status_code, demote.get_json()["error"]) == (409, "last_owner")
    leave = owner.delete("/api/v1/members/u-owner")
    assert (leave.status_code, leave.get_json()["error"]) == (409, "last_owner")
    assert owner.patch("/api/v1/members/u-mem", {"role": "owner"}).status_code == 200
    # with a second owner, the first may step down
    assert owner.patch("/api/v1/members/u-owner", {"role": "admin"}).status_code == 200
    actions = audit_actions("t-team")
    assert ("member.role_changed", "u-mem") in actions
    assert ("member.role_changed", "u-owner") in actions


def test_roles_bound_who_manages_whom(signed_as: Any) -> None:
    signed_as("u-owner", "t-team", "owner")
    admin = signed_as("u-admin", "t-team", "admin")
    member = signed_as("u-mem", "t-team", "member")
    signed_as("u-view", "t-team", "viewer")
    assert member.post("/api/v1/invites", {"email": "x@example.test"}).status_code == 403
    assert member.delete("/api/v1/members/u-view").status_code == 403
    assert (
        admin.post("/api/v1/invites", {"email": "x@example.test", "role": "owner"}).status_code
        == 403
    )
    assert admin.patch("/api/v1/members/u-owner", {"role": "member"}).status_code == 403
    assert admin.delete("/api/v1/members/u-owner").status_code == 403
    assert admin.patch("/api/v1/members/u-mem", {"role": "owner"}).status_code == 403
    assert admin.patch("/api/v1/members/u-view", {"role": "member"}).status_code == 200
    assert admin.delete("/api/v1/members/u-view").status_code == 204
    assert ("member.removed", "u-view") in audit_actions("t-team")
    assert member.delete("/api/v1/members/u-mem").status_code == 204  # leaving is allowed
    bad = admin.patch("/api/v1/members/u-admin", {"role": "superuser"})
    assert bad.status_code == 400


def test_another_workspace_cannot_see_or_touch_members_and_invites(signed_as: Any) -> None:
    owner = signed_as("u-owner", "t-team", "owner")
    outsider = signed_as("u-eve", "t-eve", "owner")
    invite = _invite(owner, "someone@example.test")
    # signed for the victim's tenant without membership: 404 before anything is read
    spoof = SignedClient(outsider.client, outsider.secret, "u-eve", "t-team")
    assert spoof.get("/api/v1/members").status_code == 404
    # in the outsider's own tenant the victim's ids do not exist
    assert outsider.delete(f"/api/v1/invites/{invite['id']}").status_code == 404
    assert outsider.patch("/api/v1/members/u-owner", {"role": "viewer"}).status_code == 404
    assert outsider.delete("/api/v1/members/u-owner").status_code == 404
    assert _member(("u-owner", "t-team")).role == "owner"


def test_inviting_an_existing_member_is_a_conflict(signed_as: Any) -> None:
    owner = signed_as("u-owner", "t-team", "owner")
    add_member("u-bob", "t-team", "member")
    reply = owner.post("/api/v1/invites", {"email": "U-BOB@example.test"})
    assert reply.status_code == 409
    assert db.session.execute(select(Invite)).first() is None
    assert owner.post("/api/v1/invites", {"email": "not-an-email"}).status_code == 400


def test_under_clerk_members_are_read_only(
    sqlite_url: str, redis_url: str, broker_url: str
) -> None:
    settings: Settings = make_settings(
        sqlite_url,
        redis_url,
        broker_url,
        auth_provider="clerk",
        clerk_jwks_url="https://clerk.example.test/.well-known/jwks.json",
    )
    migrated(settings.database_url)
    app: Flask = create_app(settings)
    with app.app_context():
        add_member("user_1", "org_1", "owner", kind="org")
        add_member("user_2", "org_1", "member", kind="org")
        owner = SignedClient(
            app.test_client(), settings.bff_shared_secret.get_secret_value(), "user_1", "org_1"
        )
        listed = owner.get("/api/v1/members")
        assert listed.status_code == 200 and listed.get_json()["managed_by"] == "clerk"
        for reply in (
            owner.post("/api/v1/invites", {"email": "x@example.test"}),
            owner.patch("/api/v1/members/user_2", {"role": "admin"}),
            owner.delete("/api/v1/members/user_2"),
            owner.post("/api/v1/workspaces", {"name": "Side project"}),
        ):
            assert (reply.status_code, reply.get_json()["error"]) == (409, "managed_by_clerk")
        assert _member(("user_2", "org_1")).role == "member"


def _member(key: tuple[str, str]) -> Membership:
    member = db.session.get(Membership, key)
    assert member is not None
    return member


def _stored_invite(invite_id: str) -> Invite:
    invite = db.session.get(Invite, invite_id)
    assert invite is not None
    return invite
