"""The audit page without JavaScript: people, links, filters, paging and downloads."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from typing import Any

import pytest

from envcat.bff.views import audit as audit_views
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.services import audit
from tests.support.bff import Browser, add_key, create_bundle, new_user
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow


def approve(stack: LiveStack, browser: Browser, bundle_id: str, keys: list[str]) -> str:
    body = {
        "client_pubkey": encode_public_key(generate_keypair()),
        "workspace": browser.account["tenant"].get("slug") or "",
    }
    created = stack.browser().post("/api/v1/requests", json=body)
    assert created.status_code == 201, created.text
    request_id: str = created.json()["id"]
    reply = browser.post(f"/approve/{request_id}", {"bundle_id": bundle_id, "include_keys": keys})
    assert reply.status_code == 200, reply.text
    return request_id


def rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)


def test_events_name_people_and_link_targets(stack: LiveStack, ada: Browser) -> None:
    bundle_id = create_bundle(ada, "prod/api")
    add_key(ada, bundle_id, "TOKEN")
    add_key(ada, bundle_id, "API_URL")
    request_id = approve(stack, ada, bundle_id, ["TOKEN"])

    page = ada.get("/audit")
    assert page.status_code == 200
    email = ada.account["user"]["email"]
    approved = next(r for r in rows(page.text) if "request.approved" in r)
    assert email in approved and ada.user_id not in approved  # an email, not an id
    assert f'href="/bundles/{bundle_id}"' in approved
    assert "<code>TOKEN</code>" in approved and "API_URL" not in approved  # what was released
    assert f'href="/audit?target={request_id}"' in approved  # the request's own events
    created = next(r for r in rows(page.text) if "bundle.created" in r)
    assert f'<a href="/bundles/{bundle_id}"><code>prod/api</code></a>' in created
    assert '<code class="action">bundle.key_attached</code>' in page.text


def test_action_prefix_person_and_bundle_filters(stack: LiveStack, ada: Browser) -> None:
    first = create_bundle(ada, "one")
    second = create_bundle(ada, "two")
    add_key(ada, first, "A_KEY")
    approve(stack, ada, first, ["A_KEY"])

    requests_only = ada.get("/audit", params={"action": "request"}).text
    assert [r for r in rows(requests_only) if "request.approved" in r]
    assert not [r for r in rows(requests_only) if "bundle." in r]
    one = ada.get("/audit", params={"bundle": first}).text
    assert len(rows(one)) == 3  # created, key attached, request approved
    two = ada.get("/audit", params={"bundle": second}).text
    assert len(rows(two)) == 1
    mine = ada.get("/audit", params={"person": ada.user_id}).text
    assert len(rows(mine)) == 5  # 2 bundles created, key created and attached, approval
    assert len(rows(ada.get("/audit", params={"person": "cli"}).text)) == 0
    # The person filter offers the people of the log by email, and keeps the choice.
    assert f'<option value="{ada.user_id}" selected>{ada.account["user"]["email"]}</option>' in mine


def test_date_range_is_whole_utc_days(ada: Browser) -> None:
    create_bundle(ada, "dated")
    assert len(rows(ada.get("/audit", params={"from": "2000-01-01"}).text)) == 1
    assert rows(ada.get("/audit", params={"to": "2000-01-01"}).text) == []
    assert rows(ada.get("/audit", params={"from": "2999-01-01"}).text) == []
    backwards = ada.get("/audit", params={"from": "2026-03-11", "to": "2026-03-10"})
    assert backwards.status_code == 400
    assert "The end date is before the start date." in backwards.text
    nonsense = ada.get("/audit", params={"from": "yesterday"})
    assert nonsense.status_code == 400
    assert 'value="yesterday"' in nonsense.text  # the form keeps what was typed


def test_paging_keeps_the_filters(ada: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUDIT_A", "AUDIT_B", "AUDIT_C"):
        ada.post("/keys", {"name": name, "value": "v"})
    create_bundle(ada, "not-a-key-event")
    monkeypatch.setattr(audit_views, "AUDIT_PAGE_SIZE", 2)
    first = ada.get("/audit", params={"action": "key"})
    assert first.text.count('<code class="action">key.created</code>') == 2
    older = re.search(r'href="(/audit\?[^"]*cursor=[^"]+)"', first.text)
    assert older is not None
    href = older.group(1).replace("&amp;", "&")
    assert "action=key" in href
    second = ada.get(href)
    assert second.text.count('<code class="action">key.created</code>') == 1
    assert "bundle.created" not in second.text
    assert "Newest" in second.text


def test_downloads_hold_the_whole_filtered_view(
    ada: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DL_A", "DL_B", "DL_C"):
        ada.post("/keys", {"name": name, "value": "v"})
    assert ada.post("/bundles", {"name": "=cmd|calc"}).status_code == 400  # refused: no event
    create_bundle(ada, "dl-bundle")
    monkeypatch.setattr(audit_views, "EXPORT_BATCH", 2)  # several api pages per download

    listing = ada.get("/audit", params={"action": "key"}).text
    assert 'href="/audit/export.csv?action=key"' in listing
    reply = ada.get("/audit/export.csv", params={"action": "key"})
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in reply.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(reply.text)))
    assert [row["action"] for row in table] == ["key.created"] * 3
    assert {row["who"] for row in table} == {ada.account["user"]["email"]}

    data: dict[str, Any] = json.loads(ada.get("/audit/export.json").text)
    assert [e["action"] for e in data["events"]][:2] == ["bundle.created", "key.created"]
    assert len(data["events"]) == 4
    assert data["truncated"] is False
    assert ada.user_id in data["people"]


def test_download_cells_never_start_a_formula(stack: LiveStack) -> None:
    browser = new_user(stack, "formula")
    # Key names cannot start with "=", but a user agent can.
    browser.client.headers["User-Agent"] = '=HYPERLINK("http://evil.example")'
    browser.post("/keys", {"name": "UA_KEY", "value": "v"})
    table = list(csv.DictReader(io.StringIO(browser.get("/audit/export.csv").text)))
    assert table[0]["user_agent"].startswith("'=")


def test_unknown_download_format_is_404(ada: Browser) -> None:
    assert ada.get("/audit/export.xml").status_code == 404


def test_the_log_is_only_the_callers_tenant(stack: LiveStack, ada: Browser) -> None:
    create_bundle(ada, "ada-only")
    bob = new_user(stack, "bob")
    page = bob.get("/audit").text
    assert "ada-only" not in page
    assert ada.account["user"]["email"] not in page
    assert "ada-only" not in bob.get("/audit/export.csv").text


@pytest.mark.parametrize(
    ("action", "heading"),
    [
        ("request.delivered", "This link was already used"),
        ("request.cancelled", "The terminal cancelled this request"),
        ("request.expired", "This request was approved but never collected"),
    ],
)
def test_a_forgotten_request_link_says_what_the_log_knows(
    stack: LiveStack, ada: Browser, action: str, heading: str
) -> None:
    request_id = "gone" + uuid.uuid4().hex  # the api does not know it (any more)
    with stack.api_app.app_context():
        audit.record(ada.tenant_id, ada.user_id, "request.approved", request_id)
        audit.record(ada.tenant_id, "cli", action, request_id)
    page = ada.get(f"/approve/{request_id}")
    assert page.status_code == 404
    assert f"<h1>{heading}</h1>" in page.text
    # Another workspace's log knows nothing of it: the plain answer, nothing leaks.
    bob = new_user(stack, "bob")
    assert "expired or does not exist" in bob.get(f"/approve/{request_id}").text
