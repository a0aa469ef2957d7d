"""GET /audit/report: a period of the log read as answers, checked against a real history.

The history is made by the real code paths (a CLI's request approved and collected
through the api and a real Celery worker, another approved and never collected, a
denial, a reveal, an export, edits), so the report reads what the services really
write, not what a test imagines they write.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from sqlalchemy import update

from envcat.core.settings import Settings
from envcat.models import AuditEvent, db
from envcat.services import compliance
from tests.support.api import REQUESTS, Cli, SeedKey, seed_bundle, wait_until_final
from tests.support.settings import make_settings

TENANT = "t-acme"
REPORT = "/api/v1/audit/report"
CANARY = "canary-report-7b1e2f"
KEYS = [SeedKey("DATABASE_URL", f"postgres://{CANARY}@db/app"), SeedKey("API_KEY", CANARY)]


def _period(**shift: float) -> dict[str, str]:
    now = datetime.now(UTC)
    since = now - timedelta(hours=1) + timedelta(**shift)
    until = now + timedelta(hours=1) + timedelta(**shift)
    return {"since": since.isoformat(), "until": until.isoformat()}


def _url(query: dict[str, str]) -> str:
    return f"{REPORT}?{urlencode(query)}"


def _approve(signed: Any, cli: Cli, bundle_id: str, keys: list[str]) -> None:
    reply = signed.post(
        f"{REQUESTS}/{cli.id}/encrypt-from-bundle",
        json={"bundle_id": bundle_id, "include_keys": keys},
    )
    assert reply.status_code == 202, reply.get_json()


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """Every test here on SQLite and on PostgreSQL (JSON details are read back on both)."""
    return make_settings(database_url, redis_url, broker_url)


@pytest.fixture
def history(api_app: Flask, signed_as: Any, celery_worker: object) -> dict[str, Any]:
    """Alice approves two requests (one collected, one not), Bob denies one, reveals, exports."""
    alice = signed_as("u-alice", TENANT, "owner")
    bob = signed_as("u-bob", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)

    collected = Cli.start(api_app.test_client())
    _approve(alice, collected, bundle_id, ["API_KEY", "DATABASE_URL"])
    delivered = wait_until_final(collected)
    assert delivered.get_json()["status"] == "ready"

    uncollected = Cli.start(api_app.test_client())
    _approve(alice, uncollected, bundle_id, ["API_KEY"])

    refused = Cli.start(api_app.test_client())
    assert bob.post(f"{REQUESTS}/{refused.id}/deny").status_code == 200

    keys = alice.get("/api/v1/keys").get_json()["keys"]
    api_key = next(k for k in keys if k["name"] == "API_KEY")
    assert bob.get(f"/api/v1/keys/{api_key['id']}?reveal=true").status_code == 200
    assert alice.get(f"/api/v1/bundles/{bundle_id}/export?format=dotenv").status_code == 200
    assert alice.patch(f"/api/v1/bundles/{bundle_id}", {"description": "prod"}).status_code == 200
    # Another workspace's history must not appear.
    other = signed_as("u-mallory", "t-other", "owner")
    assert other.post("/api/v1/bundles", {"name": "elsewhere"}).status_code == 201
    return {
        "alice": alice,
        "bob": bob,
        "bundle_id": bundle_id,
        "collected": collected.id,
        "uncollected": uncollected.id,
        "refused": refused.id,
    }


def test_report_answers_who_got_which_keys_and_who_changed_what(
    history: dict[str, Any],
) -> None:
    reply = history["bob"].get(_url(_period()))
    assert reply.status_code == 200, reply.get_json()
    report = reply.get_json()
    assert report["workspace"]["id"] == TENANT
    assert report["chain"] == {
        "events": report["chain"]["events"],
        "intact": True,
        "broken_at": None,
    }
    releases = {r["request_id"]: r for r in report["releases"]}
    assert set(releases) == {history["collected"], history["uncollected"]}
    got = releases[history["collected"]]
    assert got["approved_by"] == "u-alice"
    assert got["bundle_name"] == "production/api"
    assert got["keys"] == ["DATABASE_URL", "API_KEY"]  # bundle order, as approved
    assert got["outcome"] == "delivered"
    assert got["delivered_to_ip"] == "127.0.0.1"
    assert releases[history["uncollected"]]["outcome"] == "pending"
    assert releases[history["uncollected"]]["delivered_to_ip"] is None

    assert [(d["actor"], d["target"]) for d in report["denials"]] == [("u-bob", history["refused"])]
    accesses = [(a["actor"], a["action"], a["name"]) for a in report["accesses"]]
    assert accesses == [
        ("u-bob", "key.revealed", "API_KEY"),
        ("u-alice", "bundle.exported", "production/api"),
    ]
    assert [(c["actor"], c["action"]) for c in report["changes"]] == [("u-alice", "bundle.updated")]
    (bundle,) = report["by_bundle"]
    assert bundle == {
        "bundle_id": history["bundle_id"],
        "name": "production/api",
        "approvals": 2,
        "deliveries": 1,
        "expiries": 0,
        "keys_released": {"API_KEY": 1, "DATABASE_URL": 1},
        "approvers": ["u-alice"],
    }
    people = {p["actor"]: p for p in report["by_person"]}
    assert people["u-alice"]["approvals"] == 2
    assert people["u-alice"]["exports"] == 1
    assert people["u-alice"]["changes"] == 1
    assert people["u-bob"]["denials"] == 1
    assert people["u-bob"]["reveals"] == 1
    assert people["u-alice"]["email"] == "u-alice@example.test"
    assert "u-mallory" not in people
    assert report["totals"]["request.approved"] == 2
    assert CANARY not in reply.get_data(as_text=True)


def test_a_period_before_the_history_is_empty_but_still_checks_the_chain(
    history: dict[str, Any],
) -> None:
    report = history["alice"].get(_url(_period(days=-2))).get_json()
    assert report["events"] == 0
    assert report["releases"] == [] and report["by_person"] == []
    assert report["chain"]["intact"] is True
    assert report["chain"]["events"] > 0


def test_an_outcome_recorded_after_the_period_still_tells_the_release(
    history: dict[str, Any],
) -> None:
    # The period ends between the approval and the delivery of the collected request.
    delivered_at = db.session.execute(
        db.select(AuditEvent.at).where(
            AuditEvent.target == history["collected"], AuditEvent.action == "request.delivered"
        )
    ).scalar_one()
    until = delivered_at.replace(tzinfo=UTC) - timedelta(microseconds=1)
    since = until - timedelta(hours=1)
    query = {"since": since.isoformat(), "until": until.isoformat()}
    report = history["alice"].get(_url(query)).get_json()
    releases = {r["request_id"]: r for r in report["releases"]}
    assert releases[history["collected"]]["outcome"] == "delivered"


def test_a_tampered_log_is_reported_broken(history: dict[str, Any]) -> None:
    db.session.execute(
        update(AuditEvent)
        .where(AuditEvent.target == history["refused"])
        .values(actor="u-someone-else")
    )
    db.session.commit()
    report = history["alice"].get(_url(_period())).get_json()
    assert report["chain"]["intact"] is False
    assert report["chain"]["broken_at"] is not None


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"since": "2026-01-01T00:00:00Z"},
        {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "2024-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "yesterday", "until": "2026-01-01T00:00:00Z"},
    ],
)
def test_a_bad_period_is_a_400(signed_as: Any, query: dict[str, str]) -> None:
    reply = signed_as("u-alice", TENANT).get(_url(query))
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "validation_error"


def test_a_period_too_busy_for_one_report_is_a_400(
    signed_as: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = signed_as("u-alice", TENANT)
    for number in range(4):
        assert alice.post("/api/v1/bundles", {"name": f"b{number}"}).status_code == 201
    monkeypatch.setattr(compliance, "REPORT_MAX_EVENTS", 3)
    reply = alice.get(_url(_period()))
    assert reply.status_code == 400
    assert "shorter period" in reply.get_json()["message"]


def test_the_report_never_crosses_workspaces(history: dict[str, Any], signed_as: Any) -> None:
    mallory = signed_as("u-mallory", "t-other", "owner")
    report = mallory.get(_url(_period())).get_json()
    assert report["workspace"]["id"] == "t-other"
    assert report["releases"] == [] and report["denials"] == []
    assert {p["actor"] for p in report["by_person"]} == {"u-mallory"}
