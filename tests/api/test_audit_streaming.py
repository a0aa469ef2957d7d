"""Audit export and streaming (issue #19): JSON lines, and a syslog sink fed at least once.

A real collector on loopback (tests/support/syslog.py: TCP, TLS with a CA made per
run) takes the stream; it is stopped while events keep being written, killed mid-
batch, and shown an untrusted certificate. The shipping runs in the real service
code and, once, through a real Celery worker started by the beat task.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
from celery import Celery

from envcat.core.settings import Settings
from envcat.models import AuditEvent, AuditSink, db
from envcat.services import audit, audit_sinks
from envcat.services.runtime import create_service_app
from tests.support.settings import make_settings
from tests.support.syslog import RFC5424, SyslogCollector, collector, make_certificates

TENANT, OTHER = "t-stream", "t-other"
SINK = "/api/v1/audit/sink"
CANARY = "canary-stream-value-5d2a"


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """Both databases; sinks on loopback allowed (a single-tenant deployment's setting)."""
    return make_settings(database_url, redis_url, broker_url, audit_sink_allow_private=True)


@pytest.fixture
def owner(signed_as: Any) -> Any:
    return signed_as("u-owner", TENANT, "owner")


def _events(count: int, tenant: str = TENANT) -> None:
    for number in range(count):
        audit.record(tenant, "u-owner", "test.event", f"thing:{number}", details={"n": number})


def _ids(running: SyslogCollector) -> list[int]:
    ids = []
    for message in running.messages:
        match = RFC5424.match(message)
        assert match is not None, message[:200]
        ids.append(json.loads(match["msg"])["id"])
    return ids


def _log_ids(tenant: str = TENANT) -> list[int]:
    rows = db.session.execute(db.select(AuditEvent.id).where(AuditEvent.tenant_id == tenant))
    return sorted(rows.scalars())


def _point(owner: Any, running: SyslogCollector, **extra: Any) -> dict[str, Any]:
    body = {"host": "127.0.0.1", "port": running.port, "tls": running.tls is not None}
    if running.tls is not None:
        body["ca_pem"] = running.tls.ca_pem
    reply = owner.put(SINK, {**body, **extra})
    assert reply.status_code == 200, reply.get_json()
    result: dict[str, Any] = reply.get_json()
    return result


def test_every_event_arrives_in_order_as_rfc5424_over_tls(owner: Any) -> None:
    with collector(tls=True) as running:
        created = owner.post("/api/v1/keys", {"name": "STREAMED", "value": CANARY})
        assert created.status_code == 201
        _events(7)
        _events(3, OTHER)
        sink = _point(owner, running)
        assert sink["pending"] == len(_log_ids())  # the whole log, configuration included
        shipped = audit_sinks.ship(TENANT)
        assert shipped.error is None
        assert _ids(running) == _log_ids()  # every event, in order, nothing of OTHER
        first = RFC5424.match(running.messages[0])
        assert first is not None
        assert first["pri"] == b"110" and first["app"] == b"envcat"
        assert first["msgid"] == b"key.created"
        assert b'hash="' in first["sd"] and b'tenant="t-stream"' in first["sd"]
        assert CANARY.encode() not in b"".join(running.messages)
        status = owner.get(SINK).get_json()
        assert status["pending"] == 0 and status["last_error"] is None
        assert status["shipped"] == len(_log_ids())  # reading the sink is not audited
        assert audit_sinks.ship(TENANT).sent == 0  # nothing new, nothing resent


def test_a_collector_outage_under_traffic_loses_nothing(owner: Any) -> None:
    with collector(tls=True) as running:
        _point(owner, running)
        _events(5)
        assert audit_sinks.ship(TENANT).error is None
        running.stop()
        for _ in range(3):  # traffic while the collector is down
            _events(4)
            failed = audit_sinks.ship(TENANT)
            assert failed.sent == 0 and failed.error == "connection refused"
        down = owner.get(SINK).get_json()
        assert down["last_error"] == "connection refused" and down["pending"] == 12
        running.start()
        assert audit_sinks.ship(TENANT).error is None
        assert _ids(running) == _log_ids()


def test_a_collector_dying_mid_batch_gets_the_batch_again(owner: Any) -> None:
    with collector(tls=False) as running:
        _point(owner, running)
        _events(40)
        running.drop_after = 2000  # resets the connection after ~2 KB of the batch
        failed = audit_sinks.ship(TENANT)
        assert failed.sent == 0 and failed.error is not None
        assert running.messages == []  # the collector kept nothing of the broken batch
        assert audit_sinks.ship(TENANT).error is None
        assert _ids(running) == _log_ids()  # at least once: all of it, in order


def test_an_untrusted_certificate_sends_nothing(owner: Any, tmp_path: Any) -> None:
    with collector(tls=True) as running:
        stranger = make_certificates(tmp_path, "Someone else's CA").ca_pem
        _point(owner, running, ca_pem=stranger)
        result = audit_sinks.ship(TENANT)
        assert result.sent == 0
        assert result.error is not None and result.error.startswith("TLS certificate not trusted")
        assert running.messages == []
        assert owner.get(SINK).get_json()["last_error"] == result.error


def test_private_addresses_are_refused_unless_the_deployment_allows_them(
    owner: Any, settings: Settings
) -> None:
    with collector(tls=False) as running:
        _point(owner, running)
        strict = settings.model_copy(update={"audit_sink_allow_private": False})
        worker = create_service_app(strict, "strict-worker")
        with worker.app_context():
            result = audit_sinks.ship(TENANT)
            db.engine.dispose()
        assert result.error is not None and "AUDIT_SINK_ALLOW_PRIVATE" in result.error
        assert running.connections == 0  # refused before connecting


def test_the_beat_task_ships_through_a_real_worker(
    owner: Any, celery_app: Celery, celery_worker: object
) -> None:
    with collector(tls=True) as running:
        _point(owner, running)
        _events(6)
        celery_app.send_task("envcat.ship_audit_sinks")
        deadline = time.monotonic() + 20
        while len(running.messages) < len(_log_ids()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _ids(running) == _log_ids()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"host": "bad host!", "port": 6514}, "host"),
        ({"host": "logs.example.com", "port": 0}, "port"),
        ({"host": "logs.example.com", "port": 6514, "ca_pem": "not a cert"}, "ca_pem"),
        ({"host": "logs.example.com", "port": 6514, "extra": 1}, "extra"),
    ],
)
def test_a_bad_sink_is_a_400_and_changes_nothing(
    owner: Any, body: dict[str, Any], field: str
) -> None:
    reply = owner.put(SINK, body)
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "validation_error"
    assert field in json.dumps(reply.get_json())
    assert db.session.get(AuditSink, TENANT) is None


def test_only_admins_configure_and_each_workspace_sees_only_its_own(signed_as: Any) -> None:
    owner = signed_as("u-owner", TENANT, "owner")
    member = signed_as("u-member", TENANT, "member")
    other = signed_as("u-other", OTHER, "owner")
    body = {"host": "logs.example.com", "port": 6514}
    assert member.put(SINK, body).status_code == 403
    assert member.get(SINK).status_code == 403
    assert owner.put(SINK, body).status_code == 200
    assert other.get(SINK).status_code == 404  # its own workspace has none
    assert other.delete(SINK).status_code == 404
    actions = [e["action"] for e in owner.get("/api/v1/audit").get_json()["events"]]
    assert actions[0] == "audit_sink.configured"
    assert owner.delete(SINK).status_code == 204
    assert owner.get("/api/v1/audit").get_json()["events"][0]["action"] == "audit_sink.removed"
    assert owner.get(SINK).status_code == 404


def _chain_hash(prev: str, event: dict[str, Any]) -> str:
    """An auditor's own check of one exported event: SHA-256(prev_hash + canonical JSON)."""
    body = {k: event[k] for k in ("tenant_id", "actor", "action", "target", "ip", "user_agent")}
    body |= {"at": event["at"], "details": event["details"]}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + canonical).encode("utf-8")).hexdigest()


def test_the_export_pages_through_the_log_and_an_auditor_can_verify_it(owner: Any) -> None:
    _events(12)
    _events(2, OTHER)
    lines: list[dict[str, Any]] = []
    after = 0
    while True:
        reply = owner.get(f"/api/v1/audit/export?after={after}&limit=5")
        assert reply.status_code == 200
        assert reply.headers["Content-Type"].startswith("application/x-ndjson")
        lines += [json.loads(line) for line in reply.get_data(as_text=True).splitlines()]
        following = reply.headers.get("X-Envcat-Next-After")
        if following is None:
            break
        after = int(following)
    assert [line["id"] for line in lines] == _log_ids()
    previous = audit.GENESIS
    for line in lines:
        assert line["prev_hash"] == previous
        assert _chain_hash(previous, line) == line["hash"]
        previous = line["hash"]
    assert owner.get("/api/v1/audit/export?limit=0").status_code == 400
