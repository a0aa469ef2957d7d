"""Signed approve/deny: synchronous validation, roles, tenant isolation, the OpenAPI entry.

No worker runs here: an accepted approval stays queued in the real broker, which
is what these tests look at.
"""

from __future__ import annotations

import json
from typing import Any

import kombu.transport.redis
import pytest
import redis
from flask.testing import FlaskClient

from envcat.services.access_requests import store
from tests.support import free_port, present
from tests.support.api import REQUESTS, Cli, SeedKey, audit_actions, seed_bundle
from tests.support.databases import migrated
from tests.support.settings import make_settings
from tests.support.signed import SignedClient, add_member

TENANT = "t-acme"
KEYS = [
    SeedKey("DATABASE_URL", "postgres://db/app", required=True),
    SeedKey("API_KEY", "sk-1"),
    SeedKey("DEBUG", "false"),
]


def _approve(signed: Any, request_id: str, body: dict[str, Any]) -> Any:
    return signed.post(f"{REQUESTS}/{request_id}/encrypt-from-bundle", json=body)


def _queued(broker_url: str, request_id: str) -> list[dict[str, Any]]:
    """The encrypt_from_bundle messages for one request waiting on the approvals queue."""
    client = redis.Redis.from_url(broker_url)
    messages = [json.loads(raw) for raw in client.lrange("approvals", 0, -1)]
    client.close()
    return [
        m
        for m in messages
        if m["headers"]["task"] == "envcat.encrypt_from_bundle"
        and m["headers"]["argsrepr"].startswith(repr((request_id,))[:-2])
    ]


def test_approval_is_validated_audited_then_enqueued_with_id_and_mac_only(
    api_client: FlaskClient, signed_as: Any, broker_url: str, redis_client: redis.Redis
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cli = Cli.start(api_client)
    response = _approve(
        owner, cli.id, {"bundle_id": bundle_id, "include_keys": ["API_KEY", "DATABASE_URL"]}
    )
    assert response.status_code == 202
    assert response.get_json() == {"ok": True}
    assert audit_actions(TENANT) == [("request.approved", cli.id)]
    (message,) = _queued(broker_url, cli.id)
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.approval is not None
    # the broker sees the request id and the approval's MAC: no tenant, user, bundle or key
    assert message["headers"]["argsrepr"] == repr((cli.id, stored.approval_mac))
    for hidden in (TENANT, "u-owner", bundle_id, "DATABASE_URL"):
        assert hidden not in json.dumps(message)
    assert stored.status == "pending"
    assert stored.approval.include_keys == ("DATABASE_URL", "API_KEY")
    assert cli.wait().get_json() == {"status": "pending"}


def test_a_decided_request_cannot_be_approved_or_denied_again(
    api_client: FlaskClient, signed_as: Any
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    body = {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]}
    approved, denied = Cli.start(api_client), Cli.start(api_client)
    assert _approve(owner, approved.id, body).status_code == 202
    assert owner.post(f"{REQUESTS}/{denied.id}/deny").status_code == 200
    for response in (
        _approve(owner, approved.id, body),
        owner.post(f"{REQUESTS}/{approved.id}/deny"),
        _approve(owner, denied.id, body),
        owner.post(f"{REQUESTS}/{denied.id}/deny"),
    ):
        assert response.status_code == 409
        assert response.get_json()["error"] == "conflict"
    assert audit_actions(TENANT) == [
        ("request.approved", approved.id),
        ("request.denied", denied.id),
    ]
    assert approved.wait().get_json() == {"status": "pending"}
    assert denied.wait().get_json() == {"status": "denied"}


def test_unknown_or_expired_requests_are_404(
    api_client: FlaskClient, signed_as: Any, redis_client: redis.Redis
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cli = Cli.start(api_client)
    redis_client.delete(store.request_key(cli.id))  # as when its TTL runs out
    for request_id in (cli.id, "A" * 32, "not-an-id!"):
        approve = _approve(
            owner, request_id, {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]}
        )
        deny = owner.post(f"{REQUESTS}/{request_id}/deny")
        assert (approve.status_code, deny.status_code) == (404, 404), request_id
        assert approve.get_json()["error"] == "not_found"
    assert audit_actions(TENANT) == []


def test_bad_selections_are_refused_and_nothing_is_recorded(
    api_client: FlaskClient, signed_as: Any, broker_url: str, redis_client: redis.Redis
) -> None:
    owner = signed_as("u-owner", TENANT)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    seed_bundle(TENANT, "staging/api", [SeedKey("OTHER", "x")])
    cli = Cli.start(api_client)
    cases: list[tuple[Any, str]] = [
        ({"bundle_id": bundle_id, "include_keys": []}, "validation_error"),
        ({"bundle_id": bundle_id, "include_keys": ["API_KEY"]}, "validation_error"),
        ({"bundle_id": bundle_id, "include_keys": ["DATABASE_URL", "OTHER"]}, "validation_error"),
        ({"bundle_id": bundle_id, "include_keys": ["DATABASE_URL", "1BAD"]}, "validation_error"),
        ({"bundle_id": bundle_id, "include_keys": "DATABASE_URL"}, "validation_error"),
        ({"bundle_id": bundle_id}, "validation_error"),
        ({"include_keys": ["DATABASE_URL"]}, "validation_error"),
        (
            {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"], "extra": 1},
            "validation_error",
        ),
        ({"bundle_id": "nope", "include_keys": ["DATABASE_URL"]}, "not_found"),
    ]
    for body, code in cases:
        response = _approve(owner, cli.id, body)
        assert response.get_json()["error"] == code, body
        assert response.status_code == (404 if code == "not_found" else 400), body
    missing = _approve(owner, cli.id, {"bundle_id": bundle_id, "include_keys": ["API_KEY"]})
    assert "DATABASE_URL" in missing.get_json()["message"]
    stranger = _approve(
        owner, cli.id, {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL", "OTHER"]}
    )
    assert "OTHER" in stranger.get_json()["message"]
    assert audit_actions(TENANT) == []
    assert _queued(broker_url, cli.id) == []
    assert present(store.get(redis_client, cli.id)).approval is None


def test_a_viewer_can_neither_approve_nor_deny(api_client: FlaskClient, signed_as: Any) -> None:
    viewer = signed_as("u-viewer", TENANT, "viewer")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cli = Cli.start(api_client)
    for response in (
        _approve(viewer, cli.id, {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]}),
        viewer.post(f"{REQUESTS}/{cli.id}/deny"),
    ):
        assert response.status_code == 403
        assert response.get_json()["error"] == "forbidden"
    assert cli.wait().get_json() == {"status": "pending"}


def test_members_admins_and_owners_may_approve(api_client: FlaskClient, signed_as: Any) -> None:
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    for role in ("member", "admin", "owner"):
        signed = signed_as(f"u-{role}", TENANT, role)
        cli = Cli.start(api_client)
        body = {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]}
        assert _approve(signed, cli.id, body).status_code == 202, role


def test_another_tenants_bundle_is_404(api_client: FlaskClient, signed_as: Any) -> None:
    seed_bundle("t-b", "mine", [SeedKey("B_ONLY", "b")])
    bundle_a = seed_bundle(TENANT, "production/api", KEYS)
    user_b = signed_as("u-b", "t-b")
    cli = Cli.start(api_client)
    response = _approve(user_b, cli.id, {"bundle_id": bundle_a, "include_keys": ["DATABASE_URL"]})
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    # a signature naming a tenant the user is not in is also 404, never 403
    outsider = SignedClient(user_b.client, user_b.secret, "u-b", TENANT)
    response = _approve(outsider, cli.id, {"bundle_id": bundle_a, "include_keys": ["DATABASE_URL"]})
    assert response.status_code == 404
    assert audit_actions(TENANT) == audit_actions("t-b") == []


def test_an_unreachable_queue_fails_the_request_instead_of_leaving_it_hanging(
    sqlite_url: str, redis_url: str
) -> None:
    from envcat.api import create_app

    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(sqlite_url, redis_url, dead_broker)
    migrated(settings.database_url)
    app = create_app(settings)
    with app.app_context():
        add_member("u-owner", TENANT)
        bundle_id = seed_bundle(TENANT, "production/api", KEYS)
        cli = Cli.start(app.test_client())
        owner = SignedClient(
            app.test_client(), settings.bff_shared_secret.get_secret_value(), "u-owner", TENANT
        )
        response = _approve(
            owner, cli.id, {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]}
        )
        assert response.status_code == 503
        assert response.get_json()["error"] == "unavailable"
        assert cli.wait().get_json() == {
            "status": "failed",
            "message": "the approval could not be queued (server busy); ask again",
        }
        assert audit_actions(TENANT) == [
            ("request.approved", cli.id),
            ("request.failed", cli.id),
        ]


def test_a_broker_channel_closed_under_a_call_is_a_503_not_a_500(
    api_client: FlaskClient, signed_as: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Sentinel failover closed the shared channel while another call was inside kombu,
    whose transport then raised AttributeError (a 500 in the failover test). It is the
    broker going away: the queue-depth sample says nothing (creation goes on), and the
    approval's publish fails the request cleanly so the approver may ask again."""
    channel: Any = kombu.transport.redis.Channel
    connparams, put = channel._connparams, channel._put

    def params_of_a_closed_channel(self: Any, asynchronous: bool = False) -> Any:
        self.connection = None  # what another greenlet's close of the channel leaves
        return connparams(self, asynchronous)

    def put_on_a_closed_channel(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._pool, self.connection = None, None  # closed meanwhile: the pool is remade
        return put(self, *args, **kwargs)

    monkeypatch.setattr(channel, "_connparams", params_of_a_closed_channel)
    monkeypatch.setattr(channel, "_put", put_on_a_closed_channel)
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    cli = Cli.start(api_client)  # the backlog sample meets the closed channel: no refusal
    response = _approve(
        signed_as("u-owner", TENANT),
        cli.id,
        {"bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]},
    )
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"] == "unavailable"
    assert cli.wait().get_json()["status"] == "failed"
    assert audit_actions(TENANT) == [("request.approved", cli.id), ("request.failed", cli.id)]


def test_openapi_lists_the_request_endpoints_with_their_models(api_client: FlaskClient) -> None:
    spec = api_client.get("/api/v1/openapi.json").get_json()
    paths = spec["paths"]
    schemas = spec["components"]["schemas"]

    def ref(node: dict[str, Any]) -> str:
        return str(node["content"]["application/json"]["schema"]["$ref"]).rsplit("/", 1)[1]

    create = paths["/api/v1/requests"]["post"]
    assert ref(create["requestBody"]) == "AccessRequestCreate"
    assert ref(create["responses"]["201"]) == "AccessRequestCreated"
    assert "429" in create["responses"]
    assert ref(paths["/api/v1/requests/{request_id}/context"]["get"]["responses"]["200"]) == (
        "AccessRequestView"
    )
    wait = paths["/api/v1/requests/{request_id}/wait"]["get"]
    assert ref(wait["responses"]["200"]) == "WaitResult"
    assert wait["security"] == [{"pollToken": []}]
    timeout = next(p for p in wait["parameters"] if p["name"] == "timeout")
    assert (timeout["schema"]["minimum"], timeout["schema"]["maximum"]) == (0, 30)
    assert {"401", "410"} <= set(wait["responses"])
    assert "204" in paths["/api/v1/requests/{request_id}"]["delete"]["responses"]
    approve = paths["/api/v1/requests/{request_id}/encrypt-from-bundle"]["post"]
    assert ref(approve["requestBody"]) == "EncryptFromBundle"
    assert ref(approve["responses"]["202"]) == "DecisionAccepted"
    assert approve["security"] == [{"bffSignature": []}]
    assert {"403", "404", "409"} <= set(approve["responses"])
    assert ref(paths["/api/v1/requests/{request_id}/deny"]["post"]["responses"]["200"]) == (
        "DecisionAccepted"
    )
    for name in ("AccessRequestCreate", "EncryptFromBundle", "WaitResult", "ClientContext"):
        assert name in schemas
    assert set(schemas["AccessRequestCreate"]["required"]) == {"client_pubkey", "workspace"}
