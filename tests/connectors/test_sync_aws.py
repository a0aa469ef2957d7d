"""Sync runs against moto in server mode, through the real boto3 client and the real
shared rate limiter: pull, push, two-way, limits, bad credentials, throttling, re-runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from pytest import MonkeyPatch
from sqlalchemy import select

from envcat.models import AuditEvent, Key, KeyVersion, db
from envcat.services import keys
from envcat.services.connectors import links, sync
from tests.connectors.support import (
    ProviderProxy,
    aws,
    aws_connection,
    bundle_values,
    bundle_with,
    link,
    link_row,
    owner,
)
from tests.support import present


def _run(link_id: str, tenant_id: str = "t-conn") -> str:
    run_id = links.start_run(tenant_id, link_id)
    assert sync.sync_link(link_id, run_id) == "done"
    return run_id


def _events(action: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def test_pull_of_1000_secrets_json_and_plain_then_a_rerun_changes_nothing(
    service_app: Flask, proxy: ProviderProxy
) -> None:
    client = aws(proxy.upstream)
    for i in range(990):
        client.create_secret(Name=f"prod/api/KEY_{i:04d}", SecretString=f"value-{i}")
    client.create_secret(
        Name="prod/api/db", SecretString=json.dumps({"DB_USER": "app", "DB_PORT": 5432})
    )
    client.create_secret(Name="prod/other/NOT_MINE", SecretString="outside the prefix")
    actor = owner()
    bundle_id = bundle_with(actor, "prod/api", {})
    link_id = link(
        actor,
        aws_connection(actor, proxy.url),
        bundle_id,
        prefix="prod/api/",
        direction="pull",
        expand_json=True,
    )
    run_id = _run(link_id)
    values = bundle_values(bundle_id)
    assert len(values) == 992
    assert values["KEY_0007"] == "value-7"
    assert values["DB_USER"] == "app" and values["DB_PORT"] == "5432"
    assert "NOT_MINE" not in values
    row = link_row(link_id)
    assert row.last_status == "ok" and row.run_id is None and row.last_summary["pulled"] == 992
    [event] = _events("connector.pulled")
    assert event.details["run_id"] == run_id and len(event.details["keys"]) == 992
    assert "value-7" not in json.dumps(event.details)
    # Reads are batched: 20 names per BatchGetSecretValue call.
    assert proxy.actions()["BatchGetSecretValue"] == 50
    versions_before = db.session.query(KeyVersion).count()
    _run(link_id)
    assert db.session.query(KeyVersion).count() == versions_before
    assert len(_events("connector.pulled")) == 1
    assert link_row(link_id).last_summary["pulled"] == 0


def test_push_writes_the_bundle_once_with_aws_request_tokens(
    service_app: Flask, proxy: ProviderProxy
) -> None:
    actor = owner()
    client = aws(proxy.upstream)
    client.create_secret(Name="app/B", SecretString="stale")
    bundle_id = bundle_with(actor, "app", {"A": "alpha", "B": "beta", "C": "line1\nline2"})
    link_id = link(
        actor, aws_connection(actor, proxy.url), bundle_id, prefix="app/", direction="push"
    )
    run_id = _run(link_id)
    for name, value in {"A": "alpha", "B": "beta", "C": "line1\nline2"}.items():
        assert client.get_secret_value(SecretId=f"app/{name}")["SecretString"] == value
    assert len(client.list_secret_version_ids(SecretId="app/A")["Versions"]) == 1
    [event] = _events("connector.pushed")
    assert event.details["run_id"] == run_id
    assert sorted(k["name"] for k in event.details["keys"]) == ["A", "B", "C"]
    writes = proxy.actions()["CreateSecret"] + proxy.actions()["PutSecretValue"]
    assert writes == 3
    _run(link_id)  # nothing changed: no write at all
    assert proxy.actions()["CreateSecret"] + proxy.actions()["PutSecretValue"] == 3


def test_two_way_copies_one_sided_changes_and_reports_a_conflict(
    service_app: Flask, proxy: ProviderProxy
) -> None:
    actor = owner()
    client = aws(proxy.upstream)
    bundle_id = bundle_with(actor, "svc", {"ONLY_HERE": "e", "BOTH": "same", "CLASH": "mine"})
    client.create_secret(Name="svc/ONLY_THERE", SecretString="p")
    client.create_secret(Name="svc/BOTH", SecretString="same")
    client.create_secret(Name="svc/CLASH", SecretString="theirs")
    link_id = link(
        actor, aws_connection(actor, proxy.url), bundle_id, prefix="svc/", direction="two-way"
    )
    # Never synced and different: a conflict. The provider's write is newer than the key's.
    clash = db.session.execute(select(Key).where(Key.name == "CLASH")).scalar_one()
    clash.updated_at = datetime.now(UTC) - timedelta(hours=1)
    db.session.commit()
    _run(link_id)
    values = bundle_values(bundle_id)
    assert values == {"ONLY_HERE": "e", "BOTH": "same", "CLASH": "theirs", "ONLY_THERE": "p"}
    assert client.get_secret_value(SecretId="svc/ONLY_HERE")["SecretString"] == "e"
    row = link_row(link_id)
    assert row.last_status == "conflict" and row.last_summary["conflicts"] == ["CLASH"]
    [conflict] = _events("connector.conflict")
    assert conflict.details["keys"] == [{"name": "CLASH", "winner": "provider"}]
    # Now only EnvCat changes CLASH: a plain push, no conflict.
    keys.set_value(clash, "mine again", author=None)
    db.session.commit()
    _run(link_id)
    assert client.get_secret_value(SecretId="svc/CLASH")["SecretString"] == "mine again"
    assert link_row(link_id).last_status == "ok"
    # Only the provider changes it: a plain pull.
    client.put_secret_value(SecretId="svc/CLASH", SecretString="from aws")
    _run(link_id)
    assert bundle_values(bundle_id)["CLASH"] == "from aws"
    assert len(_events("connector.conflict")) == 1


def test_oversized_dangerous_and_invalid_names_are_per_key_errors(
    service_app: Flask, proxy: ProviderProxy
) -> None:
    client = aws(proxy.upstream)
    client.create_secret(Name="x/BIG", SecretString="y" * (64 * 1024 + 1))
    client.create_secret(Name="x/LD_PRELOAD", SecretString="/tmp/evil.so")
    client.create_secret(Name="x/not-a-name", SecretString="v")
    client.create_secret(Name="x/FINE", SecretString="ok")
    actor = owner()
    bundle_id = bundle_with(actor, "x", {})
    link_id = link(
        actor, aws_connection(actor, proxy.url), bundle_id, prefix="x/", direction="pull"
    )
    _run(link_id)
    assert bundle_values(bundle_id) == {"FINE": "ok"}
    row = link_row(link_id)
    assert row.last_status == "partial"
    errors = row.last_summary["errors"]
    assert "65536 bytes" in errors["BIG"] and "LD_PRELOAD" in errors
    assert "not-a-name" in errors
    assert "/tmp/evil.so" not in json.dumps(row.last_summary) + row.last_error


def test_wrong_credentials_fail_once_with_a_clear_error_and_no_retry_storm(
    service_app: Flask, proxy: ProviderProxy, monkeypatch: MonkeyPatch
) -> None:
    import moto.settings

    client = aws(proxy.upstream)
    client.create_secret(Name="p/A", SecretString="a")
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks IAM now
    actor = owner()
    bundle_id = bundle_with(actor, "p", {})
    connection_id = aws_connection(actor, proxy.url, access_key_id="AKIAWRONGWRONGWRONG1")
    link_id = link(actor, connection_id, bundle_id, prefix="p/", direction="pull")
    run_id = links.start_run("t-conn", link_id)
    assert sync.sync_link(link_id, run_id) == "error"
    row = link_row(link_id)
    assert row.last_status == "error" and row.run_id is None
    assert "refused the credentials" in row.last_error
    assert len(proxy.calls) == 1  # one refused call, no retries
    from envcat.models import Connection

    assert present(db.session.get(Connection, connection_id)).status == "error"


@pytest.mark.parametrize("fault", ["throttle_writes", "fail_writes"])
def test_throttling_backs_off_and_the_run_completes(
    service_app: Flask, proxy: ProviderProxy, fault: str
) -> None:
    """Throttling, and AWS's own 500 InternalFailure (which AWS says to retry), are
    ridden out with backoff: the run completes and each value is written once."""
    actor = owner()
    bundle_id = bundle_with(actor, "t", {f"K{i}": f"v{i}" for i in range(5)})
    link_id = link(
        actor, aws_connection(actor, proxy.url), bundle_id, prefix="t/", direction="push"
    )
    setattr(proxy, fault, 3)
    _run(link_id)
    client = aws(proxy.upstream)
    assert all(
        client.get_secret_value(SecretId=f"t/K{i}")["SecretString"] == f"v{i}" for i in range(5)
    )
    assert getattr(proxy, fault) == 0
    assert proxy.actions()["CreateSecret"] == 5 + 3  # three refused, then each written once
    assert link_row(link_id).last_status == "ok"


def test_an_explicit_mapping_reaches_outside_the_prefix_both_ways(
    service_app: Flask, proxy: ProviderProxy
) -> None:
    client = aws(proxy.upstream)
    client.create_secret(Name="legacy-db-password", SecretString="hunter2")
    actor = owner()
    pulled = bundle_with(actor, "pulled", {})
    connection_id = aws_connection(actor, proxy.url)
    pull_id = link(
        actor,
        connection_id,
        pulled,
        prefix="none/",
        direction="pull",
        mapping={"legacy-db-password": "DB_PASSWORD"},
    )
    _run(pull_id)
    assert bundle_values(pulled) == {"DB_PASSWORD": "hunter2"}
    pushed = bundle_with(actor, "pushed", {"API_KEY": "k"})
    push_id = link(
        actor,
        connection_id,
        pushed,
        prefix="svc/",
        direction="push",
        mapping={"shared/api-key": "API_KEY"},
    )
    _run(push_id)
    assert client.get_secret_value(SecretId="shared/api-key")["SecretString"] == "k"
    assert "svc/API_KEY" not in {s["Name"] for s in client.list_secrets()["SecretList"]}


def test_a_key_that_does_not_decrypt_fails_alone(service_app: Flask, proxy: ProviderProxy) -> None:
    actor = owner()
    bundle_id = bundle_with(actor, "d", {"GOOD": "g", "BROKEN": "b"})
    broken = db.session.execute(select(Key).where(Key.name == "BROKEN")).scalar_one()
    good = db.session.execute(select(Key).where(Key.name == "GOOD")).scalar_one()
    broken.value = good.value  # a ciphertext bound to another row
    db.session.commit()
    link_id = link(
        actor, aws_connection(actor, proxy.url), bundle_id, prefix="d/", direction="push"
    )
    _run(link_id)
    client = aws(proxy.upstream)
    assert client.get_secret_value(SecretId="d/GOOD")["SecretString"] == "g"
    row = link_row(link_id)
    assert (
        row.last_status == "partial" and "does not decrypt" in row.last_summary["errors"]["BROKEN"]
    )
