"""The pages without JavaScript: bundles, keys and the approval page, on the live stack.

The audit page has its own module, tests/bff/test_audit_page.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from envcat.bff.views.pages import key_choices, pick_bundle
from envcat.core.schemas.bundles import BundleKeyOut, BundleSummary
from tests.support.bff import (
    Browser,
    add_key,
    assert_security_headers,
    bundle_json,
    create_bundle,
    new_user,
    open_request,
)
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

CANARY = "canary-value-5be0d1c2"


def test_bundle_lifecycle_without_javascript(
    ada: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    bundle_id = create_bundle(ada, "production/api")
    add_key(ada, bundle_id, "API_TOKEN", CANARY, is_secret="on", required="on")
    add_key(ada, bundle_id, "API_URL", "https://api.example.test")
    page = ada.get(f"/bundles/{bundle_id}")
    assert CANARY not in page.text  # masked
    # Plain values are shown (with <wbr> wrap points after / . : and the like).
    assert "https://api.example.test" in page.text.replace("<wbr>", "")
    assert page.text.count("Reveal") == 1

    key_id = next(k["id"] for k in bundle_json(ada, bundle_id)["keys"] if k["name"] == "API_TOKEN")
    ticket = ada.post(f"/bundles/{bundle_id}/keys/{key_id}/reveal")
    assert ticket.status_code == 303 and CANARY not in ticket.text  # post/redirect/get
    revealed = ada.get(ticket.headers["Location"])
    assert revealed.status_code == 200 and CANARY in revealed.text
    assert revealed.headers["Cache-Control"] == "no-store"
    refreshed = ada.get(ticket.headers["Location"])  # a refresh does not reveal again
    assert CANARY not in refreshed.text and "shown once already" in refreshed.text

    listing = ada.get("/bundles", params={"q": "PRODUCTION"})
    assert f'href="/bundles/{bundle_id}"' in listing.text and ">2<" in listing.text
    assert f'href="/bundles/{bundle_id}"' not in ada.get("/bundles", params={"q": "stag"}).text

    exported = ada.post(f"/bundles/{bundle_id}/export", {"format": "dotenv"})
    assert exported.status_code == 200
    assert exported.headers["Content-Disposition"].startswith("attachment")
    assert CANARY in exported.text and "API_URL" in exported.text
    assert_security_headers(exported)

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert CANARY not in logged


def test_bundle_edit_detach_attach_and_delete(ada: Browser) -> None:
    bundle_id = create_bundle(ada, "staging/api")
    add_key(ada, bundle_id, "ONE", "1")
    key_id = bundle_json(ada, bundle_id)["keys"][0]["id"]

    assert ada.post(f"/bundles/{bundle_id}/keys/{key_id}/detach").status_code == 302
    assert bundle_json(ada, bundle_id)["keys"] == []
    page = ada.get(f"/bundles/{bundle_id}")
    assert "Key detached" in page.text and f'<option value="{key_id}">ONE</option>' in page.text

    assert ada.post(f"/bundles/{bundle_id}/attach", {"key_id": key_id}).status_code == 302
    assert [k["name"] for k in bundle_json(ada, bundle_id)["keys"]] == ["ONE"]

    edited = ada.post(
        f"/bundles/{bundle_id}/edit", {"name": "staging/web", "description": "new", "tags": "a,b"}
    )
    assert edited.status_code == 302
    detail = bundle_json(ada, bundle_id)
    assert (detail["name"], detail["description"], detail["tags"]) == (
        "staging/web",
        "new",
        ["a", "b"],
    )

    bad = ada.post(f"/bundles/{bundle_id}/edit", {"name": "bad name!"})
    assert bad.status_code == 400
    assert "flash error" in bad.text and 'value="bad name!"' in bad.text  # kept as typed
    assert bundle_json(ada, bundle_id)["name"] == "staging/web"  # unchanged

    deleted = ada.post(f"/bundles/{bundle_id}/delete")
    assert (deleted.status_code, deleted.headers["Location"]) == (302, "/bundles")
    assert ada.get(f"/bundles/{bundle_id}").status_code == 404
    assert ada.get(f"/keys/{key_id}").status_code == 200  # the key stays in the library


def test_duplicate_and_invalid_bundles_are_explained(ada: Browser) -> None:
    create_bundle(ada, "dup/api")
    again = ada.post("/bundles", {"name": "dup/api", "description": "typed"})
    assert again.status_code == 409
    assert "flash error" in again.text
    assert 'value="dup/api"' in again.text and 'value="typed"' in again.text  # kept
    invalid = ada.post("/bundles", {"name": "//nope"})
    assert invalid.status_code == 400
    assert "single slashes between parts, like production/api" in invalid.text
    assert 'value="//nope"' in invalid.text
    assert len(ada.get("/api/v1/bundles").json()["bundles"]) == 1


def test_import_by_paste_and_by_upload(ada: Browser) -> None:
    bundle_id = create_bundle(ada, "imported/app")
    pasted = ada.post(
        f"/bundles/{bundle_id}/import",
        {"content": f"FIRST=1\nSECOND='{CANARY}'\n", "format": "dotenv", "is_secret": "on"},
    )
    assert pasted.status_code == 302
    summary = ada.get(pasted.headers["Location"]).text
    assert "Imported: 2 created (FIRST, SECOND)" in summary
    assert CANARY not in summary

    upload = ada.client.post(
        f"/bundles/{bundle_id}/import",
        data={"csrf_token": ada.csrf, "format": "dotenv", "overwrite": "on"},
        files={"file": (".env", b"FIRST=one\nTHIRD=3\n", "text/plain")},
    )
    assert upload.status_code == 302
    assert "1 created (THIRD); 1 updated (FIRST)" in ada.get(upload.headers["Location"]).text
    names = [k["name"] for k in bundle_json(ada, bundle_id)["keys"]]
    assert sorted(names) == ["FIRST", "SECOND", "THIRD"]

    binary = ada.client.post(
        f"/bundles/{bundle_id}/import",
        data={"csrf_token": ada.csrf, "format": "dotenv"},
        files={"file": (".env", b"\xff\xfe\x00", "application/octet-stream")},
    )
    assert "UTF-8" in ada.get(binary.headers["Location"]).text


def test_key_library_pages(ada: Browser) -> None:
    created = ada.post("/keys", {"name": "LIB_KEY", "value": CANARY, "is_secret": "on"})
    assert created.status_code == 302 and "Created LIB_KEY." in ada.get("/keys").text
    listing = ada.get("/keys", params={"q": "lib"})
    assert "LIB_KEY" in listing.text and CANARY not in listing.text
    key_id = ada.get("/api/v1/keys").json()["keys"][0]["id"]

    assert CANARY not in ada.get(f"/keys/{key_id}").text
    ticket = ada.post(f"/keys/{key_id}/reveal")
    assert ticket.status_code == 303
    assert CANARY in ada.get(ticket.headers["Location"]).text
    assert CANARY not in ada.get(ticket.headers["Location"]).text  # spent

    ada.post(f"/keys/{key_id}/edit", {"name": "LIB_KEY2", "description": "x", "value": ""})
    key = ada.get(f"/api/v1/keys/{key_id}").json()
    assert (key["name"], key["is_secret"]) == ("LIB_KEY2", False)
    shown = ada.get(f"/keys/{key_id}").text  # no longer secret: shown, unchanged value
    assert CANARY in shown

    bad = ada.post("/keys", {"name": "1BAD", "value": "x"})
    assert "flash error" in ada.get(bad.headers["Location"]).text

    assert ada.post(f"/keys/{key_id}/delete").headers["Location"] == "/keys"
    assert ada.get(f"/keys/{key_id}").status_code == 404


def test_tenants_never_see_each_other(stack: LiveStack, ada: Browser) -> None:
    bundle_id = create_bundle(ada, "private/thing")
    bob = new_user(stack, "bob")
    assert bob.get(f"/bundles/{bundle_id}").status_code == 404
    assert "private/thing" not in bob.get("/bundles").text
    assert bob.post(f"/bundles/{bundle_id}/delete").status_code == 404
    assert bundle_json(ada, bundle_id)["name"] == "private/thing"


def test_approval_page_preselects_hints_and_locks_required_keys(
    stack: LiveStack, ada: Browser
) -> None:
    create_bundle(ada, "other/app")
    bundle_id = create_bundle(ada, "prod/api")
    add_key(ada, bundle_id, "REQUIRED_ONE", "r", required="on")
    add_key(ada, bundle_id, "WANTED", "w")
    add_key(ada, bundle_id, "UNWANTED", "u")
    created = open_request(
        stack,
        ada.workspace,
        bundle="prod/api",
        template_keys=["WANTED", "MISSING"],
        context={"hostname": "laptop-42", "cwd": "/srv/app", "command": "envcat get prod/api"},
    )
    page = ada.get(f"/approve/{created['id']}")
    assert page.status_code == 200
    html = page.text
    assert created["user_code"] in html and "Check that this matches your terminal" in html
    assert "laptop-42" in html and "/srv/app" in html
    assert f'<option value="{bundle_id}" selected>' in html
    assert re.search(
        r'disabled>\s*<input type="hidden" name="include_keys" value="REQUIRED_ONE">', html
    )
    assert re.search(r'name="include_keys" value="WANTED" checked>', html)
    assert re.search(r'name="include_keys" value="UNWANTED">', html)
    assert "Asked for but not in this bundle: <code>MISSING</code>" in html

    refused = ada.post(
        f"/approve/{created['id']}",
        {"decision": "approve", "bundle_id": bundle_id, "include_keys": ["NOPE"]},
    )
    assert refused.status_code == 400
    assert "flash error" in refused.text and created["user_code"] in refused.text

    approved = ada.post(
        f"/approve/{created['id']}",
        {"decision": "approve", "bundle_id": bundle_id, "include_keys": ["REQUIRED_ONE", "WANTED"]},
    )
    assert approved.status_code == 200
    assert "2 keys will be sealed" in approved.text
    again = ada.post(f"/approve/{created['id']}", {"decision": "deny"})
    assert again.status_code in (404, 409)  # decided (or already delivered and gone)
    # the inbox's history names the keys released (a dict's `keys` method once showed here)
    history = ada.get("/requests").text
    assert "<code>REQUIRED_ONE,<wbr> WANTED</code>" in history
    assert "built-in method" not in history


def test_unknown_or_expired_requests_get_a_friendly_page(ada: Browser) -> None:
    for request_id in ("does-not-exist-123456", "x"):
        reply = ada.get(f"/approve/{request_id}")
        assert reply.status_code == 404
        assert "expired or does not exist" in reply.text
    denied = ada.post("/approve/does-not-exist-123456", {"decision": "deny"})
    assert denied.status_code == 404 and "expired or does not exist" in denied.text


def _summary(bundle_id: str, name: str) -> BundleSummary:
    now = datetime.now(UTC)
    return BundleSummary(
        id=bundle_id,
        name=name,
        description="",
        tags=[],
        key_count=0,
        created_at=now,
        updated_at=now,
    )


def _key(name: str, *, required: bool = False) -> BundleKeyOut:
    return BundleKeyOut(
        id=name.lower(),
        name=name,
        export_name=name,
        is_secret=True,
        required=required,
        position=0,
        description="",
        value=None,
    )


def test_pick_bundle_and_key_choices() -> None:
    bundles = [_summary("1", "prod/api"), _summary("2", "Prod/Web")]
    assert pick_bundle(bundles, "2", hint_id="1") == bundles[1]
    assert pick_bundle(bundles, "9", hint_id="1") == bundles[0]
    assert pick_bundle(bundles, None, hint="prod/web") == bundles[1]
    assert pick_bundle(bundles, None, hint="nope") is None
    assert pick_bundle(bundles[:1], None) == bundles[0]
    keys = [_key("A", required=True), _key("B"), _key("C")]
    assert [c.checked for c in key_choices(keys, [])] == [True, True, True]
    assert [c.checked for c in key_choices(keys, ["C"])] == [True, False, True]
    assert [c.checked for c in key_choices(keys, ["C"], selected=["B"])] == [True, True, False]
