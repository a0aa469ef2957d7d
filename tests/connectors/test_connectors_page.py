"""The connectors page on the live stack (real api, worker and bff): links with their
status, "Sync now" through the worker against moto, connections without credentials."""

from __future__ import annotations

import secrets
import time

import pytest

from tests.bff.conftest import ada, stack  # noqa: F401  # the bff tests' fixtures
from tests.connectors.support import ACCESS_KEY_ID, REGION, ProviderProxy, aws
from tests.support.bff import Browser
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

CANARY_SECRET = f"canary-aws-secret-{secrets.token_hex(8)}"


def test_sync_now_runs_and_the_page_shows_the_result(
    stack: LiveStack,  # noqa: F811
    ada: Browser,  # noqa: F811
    proxy: ProviderProxy,
) -> None:
    aws(proxy.upstream).create_secret(Name="web/API_URL", SecretString="https://x.test")
    api = stack.signed(ada.user_id, ada.tenant_id)
    connection = api.post(
        "/api/v1/connections",
        json={
            "name": "prod-aws",
            "provider": "aws",
            "region": REGION,
            "endpoint_url": proxy.url,
            "aws": {"access_key_id": ACCESS_KEY_ID, "secret_access_key": CANARY_SECRET},
        },
    ).json()
    bundle = api.post("/api/v1/bundles", json={"name": "web"}).json()
    link = api.post(
        "/api/v1/links",
        json={
            "connection_id": connection["id"],
            "bundle_id": bundle["id"],
            "prefix": "web/",
            "direction": "pull",
        },
    ).json()

    page = ada.get("/connectors")
    assert page.status_code == 200
    assert "prod-aws" in page.text and "web/" in page.text and "Sync now" in page.text
    assert CANARY_SECRET not in page.text
    queued = ada.post(f"/connectors/links/{link['id']}/sync")
    assert queued.status_code == 302 and queued.headers["Location"] == "/connectors"
    deadline = time.monotonic() + 30
    while "1 pulled" not in (shown := ada.get("/connectors").text):
        assert time.monotonic() < deadline, "the sync never finished"
        time.sleep(0.2)
    assert 'status-ok">ok<' in shown
    assert "API_URL" in ada.get(f"/bundles/{bundle['id']}").text
    forged = ada.client.post(f"/connectors/links/{link['id']}/sync", data={"csrf_token": "x"})
    assert forged.status_code in (400, 403)  # a cross-site form without the token syncs nothing
