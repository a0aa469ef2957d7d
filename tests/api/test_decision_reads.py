"""An approval's reads (issue #22), through the real api on SQLite and PostgreSQL.

The workspace's policy, the bundle's approver and requester rules and the notice
channel are read in one statement inside the approval's own unit of work, and the
decision's notice is queued from that read, not from a second unit after the commit.
The notice still goes exactly where the workspace has a channel (a webhook, or email
through SMTP unless turned off), for an ordinary approval and for a break-glass one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import event

from envcat.core.settings import Settings
from envcat.models import NotificationTarget, db
from tests.support.api import REQUESTS, Cli, SeedKey, seed_bundle
from tests.support.settings import make_settings

TENANT = "t-acme"
KEYS = [SeedKey("API_KEY", "sk-canary-decision-reads")]
RULE_TABLES = (
    "workspace_policies",
    "notification_targets",
    "bundle_approvers",
    "bundle_requesters",
)


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    """Both database backends, and an SMTP host configured (nothing is sent from the api)."""
    return make_settings(database_url, redis_url, broker_url, smtp_host="127.0.0.1")


@pytest.fixture
def broker(broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(broker_url)
    yield client
    client.close()


@contextmanager
def recorded() -> Iterator[tuple[list[str], list[int]]]:
    """The statements the api sends and the connections it checks out, while inside."""
    statements: list[str] = []
    checkouts: list[int] = []

    def on_statement(*args: Any) -> None:
        statements.append(str(args[2]))

    def on_checkout(*_: Any) -> None:
        checkouts.append(1)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield statements, checkouts
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine.pool, "checkout", on_checkout)


def _notices(broker: redis.Redis) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting in the notifications queue."""
    found = []
    for raw in broker.lrange("notifications", 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], body[0]))
    return found


def _approve(signed: Any, cli: Cli, bundle_id: str) -> Any:
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"]}
    return signed.post(f"{REQUESTS}/{cli.id}/encrypt-from-bundle", json=body)


def _target(webhook_url: str | None, email_enabled: bool) -> None:
    db.session.merge(
        NotificationTarget(tenant_id=TENANT, webhook_url=webhook_url, email_enabled=email_enabled)
    )
    db.session.commit()


def test_an_approval_reads_its_rules_once_in_one_unit_and_queues_its_notice(
    api_client: FlaskClient, signed_as: Any, broker: redis.Redis
) -> None:
    member = signed_as("u-mem", TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    db.session.commit()
    cli = Cli.start(api_client)
    db.session.remove()  # the test's own session holds no connection into the call
    with recorded() as (statements, checkouts):
        reply = _approve(member, cli, bundle_id)
    assert reply.status_code == 202, reply.get_json()
    rule_reads = [s for s in statements if any(table in s for table in RULE_TABLES)]
    assert len(rule_reads) == 1, rule_reads  # all four tables, one statement
    assert all(table in rule_reads[0] for table in RULE_TABLES)
    assert len(checkouts) == 1, statements  # the notice's read did not open a second unit
    # SMTP is configured and the workspace never turned email off: the notice is queued
    assert _notices(broker) == [("envcat.notify_decision", [TENANT, cli.id, "request.approved"])]


@pytest.mark.parametrize(
    ("webhook_url", "email_enabled", "queued"),
    [
        ("https://hooks.example.test/envcat", False, True),  # a webhook, email off
        (None, False, False),  # email turned off, no webhook: nowhere to send
        (None, True, True),  # email on through SMTP
    ],
)
def test_the_notice_goes_exactly_where_the_workspace_has_a_channel(
    api_client: FlaskClient,
    signed_as: Any,
    broker: redis.Redis,
    webhook_url: str | None,
    email_enabled: bool,
    queued: bool,
) -> None:
    owner = signed_as("u-owner", TENANT, "owner")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    _target(webhook_url, email_enabled)
    ordinary, urgent = Cli.start(api_client), Cli.start(api_client)
    assert _approve(owner, ordinary, bundle_id).status_code == 202
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"], "reason": "INC-42: db down"}
    assert owner.post(f"{REQUESTS}/{urgent.id}/break-glass", json=body).status_code == 202
    expected = [
        ("envcat.notify_decision", [TENANT, ordinary.id, "request.approved"]),
        ("envcat.notify_decision", [TENANT, urgent.id, "request.break_glass"]),
    ]
    # Celery's Redis transport LPUSHes: the newest message is first in the list
    assert sorted(_notices(broker)) == (sorted(expected) if queued else [])


def test_without_smtp_or_a_target_no_notice_is_queued(
    database_url: str, redis_url: str, broker_url: str, broker: redis.Redis
) -> None:
    from envcat.api import create_app
    from tests.support.databases import migrated
    from tests.support.signed import member_client

    migrated(database_url)
    app = create_app(make_settings(database_url, redis_url, broker_url))
    with app.app_context():
        member = member_client(app, "u-mem", TENANT, "member")
        bundle_id = seed_bundle(TENANT, "production/api", KEYS)
        db.session.commit()
        cli = Cli.start(app.test_client())
        assert _approve(member, cli, bundle_id).status_code == 202
        assert _notices(broker) == []
        db.session.remove()
        db.engine.dispose()
