"""The key page's History section and the bundle page's "Export as", without JavaScript (#19)."""

from __future__ import annotations

import re

import pytest

from tests.support.bff import Browser, add_key, bundle_json, create_bundle, open_request
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

OLD = "old-canary-9d41e6"


def test_history_reveals_an_old_value_once_and_rolls_back(ada: Browser) -> None:
    created = ada.post("/keys", {"name": "HIST_KEY", "value": OLD, "is_secret": "on"})
    assert created.status_code == 302
    key_id = ada.get("/api/v1/keys").json()["keys"][0]["id"]
    saved = ada.post(
        f"/keys/{key_id}/edit", {"name": "HIST_KEY", "value": "new-value", "is_secret": "on"}
    )
    assert saved.status_code == 302

    page = ada.get(f"/keys/{key_id}").text
    assert "History" in page and 'id="version-2"' in page and 'id="version-1"' in page
    assert OLD not in page
    assert f'action="/keys/{key_id}/versions/1/reveal"' in page

    ticket = ada.post(f"/keys/{key_id}/versions/1/reveal")
    assert ticket.status_code == 303
    assert "reveal_version=" in ticket.headers["Location"]
    assert OLD in ada.get(ticket.headers["Location"]).text
    assert OLD not in ada.get(ticket.headers["Location"]).text  # the ticket is spent
    # A ticket for version 1 of this key does not open another key's page.
    other = ada.post("/keys", {"name": "OTHER_KEY", "value": "o", "is_secret": "on"})
    assert other.status_code == 302
    other_id = next(
        k["id"] for k in ada.get("/api/v1/keys").json()["keys"] if k["name"] == "OTHER_KEY"
    )
    stolen = ada.post(f"/keys/{key_id}/versions/1/reveal").headers["Location"]
    token = re.search(r"reveal_version=([^&#]+)", stolen).group(1)  # type: ignore[union-attr]
    assert OLD not in ada.get(f"/keys/{other_id}?reveal_version={token}").text

    rolled = ada.post(f"/keys/{key_id}/rollback", {"version": "1"})
    assert rolled.status_code == 302
    after = ada.get(rolled.headers["Location"]).text
    assert "Rolled back to version 1" in after and 'id="version-3"' in after
    assert ada.get(f"/api/v1/keys/{key_id}?reveal=true").json()["value"] == OLD
    bad = ada.post(f"/keys/{key_id}/rollback", {"version": "x"})
    assert "flash error" in ada.get(bad.headers["Location"]).text


def test_export_as_on_the_bundle_and_both_names_on_the_approval_page(
    stack: LiveStack, ada: Browser
) -> None:
    bundle_id = create_bundle(ada, "prod/web")
    add_key(ada, bundle_id, "LOCAL_ONLY", "x")
    created = ada.post("/keys", {"name": "PROD_DATABASE_URL", "value": "postgres://p"})
    assert created.status_code == 302
    key_id = next(
        k["id"] for k in ada.get("/api/v1/keys").json()["keys"] if k["name"] == "PROD_DATABASE_URL"
    )
    page = ada.get(f"/bundles/{bundle_id}").text
    assert 'name="alias"' in page and "Export as" in page

    clash = ada.post(f"/bundles/{bundle_id}/attach", {"key_id": key_id, "alias": "LOCAL_ONLY"})
    assert "flash error" in ada.get(clash.headers["Location"]).text
    attached = ada.post(f"/bundles/{bundle_id}/attach", {"key_id": key_id, "alias": "DATABASE_URL"})
    assert attached.status_code == 302
    entry = next(k for k in bundle_json(ada, bundle_id)["keys"] if k["id"] == key_id)
    assert (entry["name"], entry["alias"], entry["export_name"]) == (
        "PROD_DATABASE_URL",
        "DATABASE_URL",
        "DATABASE_URL",
    )
    assert "exported as <code>DATABASE_URL</code>" in ada.get(f"/bundles/{bundle_id}").text

    request = open_request(stack, ada.workspace, bundle="prod/web", template_keys=["DATABASE_URL"])
    html = ada.get(f"/approve/{request['id']}").text
    assert re.search(r'name="include_keys" value="DATABASE_URL" checked>', html)
    assert "from <code>PROD_DATABASE_URL</code>" in html
    approved = ada.post(
        f"/approve/{request['id']}",
        {"decision": "approve", "bundle_id": bundle_id, "include_keys": ["DATABASE_URL"]},
    )
    assert approved.status_code == 200 and "1 key will be sealed" in approved.text
