"""GET /metrics exposes the named envcat_ metrics with real values after a flow."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from envcat.core.settings import Settings
from tests.support.api import REQUESTS, Cli, SeedKey, seed_bundle, wait_until_final
from tests.support.settings import make_settings

TENANT = "t-metrics"
TOKEN = "api-test-metrics-token"


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, broker_url: str) -> Settings:
    """The api of these tests lets a scraper with METRICS_TOKEN in."""
    return make_settings(sqlite_url, redis_url, broker_url, metrics_token=TOKEN)


def _scrape(api_app: Flask) -> dict[str, float]:
    response = api_app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_metrics_count_a_real_flow(api_app: Flask, signed_as: Any, celery_worker: object) -> None:
    owner = signed_as("u-metrics", TENANT)
    bundle_id = seed_bundle(TENANT, "metrics/app", [SeedKey("TOKEN", "metrics-canary")])
    before = _scrape(api_app)

    delivered = Cli.start(api_app.test_client(), TENANT, bundle="metrics/app")
    approve = owner.post(
        f"{REQUESTS}/{delivered.id}/encrypt-from-bundle",
        json={"bundle_id": bundle_id, "include_keys": ["TOKEN"]},
    )
    assert approve.status_code == 202
    assert wait_until_final(delivered).get_json()["status"] == "ready"
    denied = Cli.start(api_app.test_client(), TENANT)
    assert owner.post(f"{REQUESTS}/{denied.id}/deny").status_code == 200
    assert wait_until_final(denied).get_json()["status"] == "denied"

    after = _scrape(api_app)

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew("envcat_requests_created_total") == 2
    assert grew("envcat_requests_approved_total") == 1
    assert grew("envcat_requests_denied_total") == 1
    assert grew("envcat_requests_delivered_total") == 1
    assert grew("envcat_approval_to_delivery_seconds_count") == 1
    assert 0 < grew("envcat_approval_to_delivery_seconds_sum") < 30
    assert "metrics-canary" not in str(after)


def test_metrics_need_the_bearer_token(api_app: Flask) -> None:
    client = api_app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.get_json()["error"] == "unauthorized"
        assert b"envcat_" not in refused.data


def test_metrics_do_not_exist_without_a_token(
    sqlite_url: str, redis_url: str, broker_url: str
) -> None:
    from envcat.api import create_app

    app = create_app(make_settings(sqlite_url, redis_url, broker_url))
    reply = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 404
    assert reply.get_json()["error"] == "not_found"
