"""The compliance report page (issue #19): printable HTML, CSV and JSON, one workspace only."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.bff import Browser, add_key, create_bundle, new_user
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

HOSTILE_AGENT = '=HYPERLINK("http://evil.example")'


def released_and_collected(stack: LiveStack, browser: Browser, bundle_id: str) -> str:
    """A terminal asks, `browser` approves TOKEN, the terminal collects (hostile user agent)."""
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": browser.workspace}
    with httpx.Client(base_url=stack.bff_url, headers={"User-Agent": HOSTILE_AGENT}) as terminal:
        created = terminal.post("/api/v1/requests", json=body)
        assert created.status_code == 201, created.text
        request_id: str = created.json()["id"]
        approved = browser.post(
            f"/approve/{request_id}", {"bundle_id": bundle_id, "include_keys": ["TOKEN"]}
        )
        assert approved.status_code == 200, approved.text
        reply = terminal.get(
            f"/api/v1/requests/{request_id}/wait",
            params={"timeout": 20},
            headers={"X-Poll-Token": created.json()["poll_token"]},
            timeout=30,
        )
    assert reply.json()["status"] == "ready"
    return request_id


def test_the_report_tells_who_got_which_keys_in_every_format(
    stack: LiveStack, ada: Browser
) -> None:
    bundle_id = create_bundle(ada, "prod/report")
    add_key(ada, bundle_id, "TOKEN", "canary-report-page-41c9")
    add_key(ada, bundle_id, "OTHER")
    request_id = released_and_collected(stack, ada, bundle_id)

    page = ada.get("/audit/report")
    assert page.status_code == 200
    assert "Intact: all" in page.text
    assert "<code>prod/report</code>" in page.text
    assert "<code>TOKEN</code> (1)" in page.text  # the key that left, and how often
    assert "<code>OTHER</code> (" not in page.text
    assert ada.account["user"]["email"] in page.text
    assert "canary-report-page-41c9" not in page.text
    today = datetime.now(UTC).date()
    days = f"from={(today - timedelta(days=29)).isoformat()}&amp;to={today.isoformat()}"
    assert f'href="/audit/report.csv?{days}"' in page.text

    table = list(csv.DictReader(io.StringIO(ada.get("/audit/report.csv").text)))
    release = next(row for row in table if row["section"] == "release")
    assert release["target"].removeprefix("'") == request_id  # an id may start with "-"
    assert release["keys"] == "TOKEN"
    assert release["outcome"] == "delivered"
    assert release["who"] == ada.account["user"]["email"]
    assert release["delivered_to_agent"].startswith("'=")  # never a formula in a spreadsheet
    assert {row["section"] for row in table} >= {"release", "change"}

    document = json.loads(ada.get("/audit/report.json").text)
    assert document["workspace"]["id"] == ada.tenant_id
    assert [r["request_id"] for r in document["releases"]] == [request_id]
    assert document["chain"]["intact"] is True


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "2026-13-01", "to": "2026-12-01"}, "Dates look like"),
        ({"from": "2026-12-05", "to": "2026-12-01"}, "before the start date"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "at most 366 days"),
    ],
)
def test_a_bad_period_is_explained(ada: Browser, query: dict[str, str], message: str) -> None:
    page = ada.get("/audit/report", params=query)
    assert page.status_code == 400
    assert message in page.text
    assert ada.get("/audit/report.csv", params=query).status_code == 400


def test_a_report_is_only_of_the_callers_workspace(stack: LiveStack, ada: Browser) -> None:
    bundle_id = create_bundle(ada, "ada-secret-bundle")
    add_key(ada, bundle_id, "TOKEN")
    released_and_collected(stack, ada, bundle_id)
    bob = new_user(stack, "bob-report")
    for path in ("/audit/report", "/audit/report.csv", "/audit/report.json"):
        text = bob.get(path).text
        assert "ada-secret-bundle" not in text
        assert ada.account["user"]["email"] not in text


def test_unknown_report_format_is_404(ada: Browser) -> None:
    assert ada.get("/audit/report.xml").status_code == 404
