"""The GCP client (httpx over Secret Manager v1 REST) against the loopback contract server:
token exchange with a service-account key, pull with JSON expansion, push, 429 backoff,
a wrong key refused with a clear error."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Flask

from envcat.core.schemas.connectors import ConnectionCreate
from envcat.models import Connection, db
from envcat.services.connectors import connections, links, sync
from envcat.services.tenancy import Actor
from tests.connectors.gcp_fake import FakeSecretManager, service_account
from tests.connectors.support import bundle_values, bundle_with, link, link_row, owner
from tests.support import present


@pytest.fixture
def gcp() -> Iterator[FakeSecretManager]:
    fake = FakeSecretManager()
    fake.start()
    yield fake
    fake.stop()


def _connection(actor: Actor, fake: FakeSecretManager, *, trusted: bool = True) -> str:
    account, public = service_account(f"{fake.url}/token")
    if trusted:
        fake.accounts[json.loads(account)["client_email"]] = public
    body = ConnectionCreate.model_validate(
        {
            "name": "gcp",
            "provider": "gcp",
            "project_id": fake.project,
            "endpoint_url": fake.url,
            "gcp": {"service_account_json": account},
        }
    )
    return connections.create(actor, body).id


def _run(link_id: str) -> str:
    return sync.sync_link(link_id, links.start_run("t-conn", link_id))


def test_pull_expands_json_and_push_adds_versions(
    service_app: Flask, gcp: FakeSecretManager
) -> None:
    gcp.add("prod_API_TOKEN", "tok")
    gcp.add("prod_db", json.dumps({"DB_USER": "app", "DB_POOL": 5}))
    gcp.add("other_X", "not mine")
    actor = owner()
    connection_id = _connection(actor, gcp)
    pulled = bundle_with(actor, "pulled", {})
    link_id = link(actor, connection_id, pulled, prefix="prod_", direction="pull", expand_json=True)
    assert _run(link_id) == "done"
    assert bundle_values(pulled) == {"API_TOKEN": "tok", "DB_USER": "app", "DB_POOL": "5"}

    pushed = bundle_with(actor, "pushed", {"A": "alpha", "B": "beta"})
    gcp.add("out_B", "old")
    push_id = link(actor, connection_id, pushed, prefix="out_", direction="push")
    assert _run(push_id) == "done"
    assert gcp.latest("out_A") == "alpha" and gcp.latest("out_B") == "beta"
    assert len(gcp.secrets["out_B"]) == 2
    assert _run(push_id) == "done"  # nothing changed: no new version
    assert len(gcp.secrets["out_A"]) == 1 and len(gcp.secrets["out_B"]) == 2


def test_throttled_calls_back_off_then_succeed(service_app: Flask, gcp: FakeSecretManager) -> None:
    gcp.add("p_A", "a")
    actor = owner()
    link_id = link(
        actor, _connection(actor, gcp), bundle_with(actor, "b", {}), prefix="p_", direction="pull"
    )
    gcp.throttle = 3
    assert _run(link_id) == "done"
    assert bundle_values(link_row(link_id).bundle_id) == {"A": "a"}


def test_an_unknown_service_account_is_refused_clearly(
    service_app: Flask, gcp: FakeSecretManager
) -> None:
    gcp.add("p_A", "a")
    actor = owner()
    connection_id = _connection(actor, gcp, trusted=False)
    link_id = link(actor, connection_id, bundle_with(actor, "b", {}), prefix="p_", direction="pull")
    assert _run(link_id) == "error"
    row = link_row(link_id)
    assert "GCP refused the service account" in row.last_error
    assert sum(gcp.calls.values()) == 0  # no API call without a token, and no retry
    assert connections.record_test("t-conn", connection_id)
    db.session.expire_all()
    assert present(db.session.get(Connection, connection_id)).status == "error"


def test_two_way_conflict_uses_the_version_time_from_gcp(
    service_app: Flask, gcp: FakeSecretManager
) -> None:
    actor = owner()
    bundle_id = bundle_with(actor, "tw", {"SHARED": "envcat side"})
    gcp.add("tw_SHARED", "gcp side")  # written after the key: GCP's write is the newest
    link_id = link(actor, _connection(actor, gcp), bundle_id, prefix="tw_", direction="two-way")
    assert _run(link_id) == "done"
    assert bundle_values(bundle_id) == {"SHARED": "gcp side"}
    row = link_row(link_id)
    assert row.last_status == "conflict" and row.last_summary["conflicts"] == ["SHARED"]
    assert gcp.calls["GET latest"] == 1  # the version time is read only for the conflict
    assert len(gcp.secrets["tw_SHARED"]) == 1  # the loser's side was not written back
