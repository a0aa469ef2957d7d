"""Import and export through the real api: semantics, byte-exact round trips, atomicity, leaks."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import redis
from dotenv import dotenv_values
from sqlalchemy import event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from envcat.core.settings import Settings
from envcat.models import AuditEvent, Bundle, BundleKey, Key, db, utcnow
from tests.support.signed import SignedClient
from tests.support.values import NASTY

FOUR_KB = "".join(chr(0x20 + (i * 7) % 95) for i in range(4096))
VALUES = {**NASTY, "FOUR_KB": FOUR_KB, "DOLLAR_HOME": "$HOME", "BRACE_X": "${X}"}


@pytest.fixture
def owner(signed_as):
    return signed_as("u-owner", "t-a", "owner")


def _bundle(client, name: str = "production/api") -> str:
    response = client.post("/api/v1/bundles", {"name": name})
    assert response.status_code == 201
    bundle_id: str = response.get_json()["id"]
    return bundle_id


def _import(client, bundle_id: str, fmt: str, content: str, overwrite: bool = False):
    return client.post(
        f"/api/v1/bundles/{bundle_id}/import",
        {"format": fmt, "content": content, "overwrite": overwrite},
    )


def _export(client, bundle_id: str, fmt: str = "dotenv") -> bytes:
    response = client.get(f"/api/v1/bundles/{bundle_id}/export?format={fmt}")
    assert response.status_code == 200, response.get_json()
    body: bytes = response.data
    return body


def _values(client, bundle_id: str) -> dict[str, str]:
    """The bundle's values, revealed one by one through the api."""
    detail = client.get(f"/api/v1/bundles/{bundle_id}").get_json()
    return {
        k["name"]: client.get(f"/api/v1/keys/{k['id']}?reveal=true").get_json()["value"]
        for k in detail["keys"]
    }


def _state() -> list[tuple[object, ...]]:
    db.session.expire_all()
    bundles = [(b.id, b.name, str(b.updated_at)) for b in db.session.query(Bundle)]
    keys = [(k.id, k.name, k.value, k.is_secret) for k in db.session.query(Key)]
    entries = [(e.bundle_id, e.key_id, e.position, e.required) for e in db.session.query(BundleKey)]
    return sorted(bundles) + sorted(keys) + sorted(entries)


def test_nasty_values_round_trip_byte_for_byte(owner) -> None:
    source = _bundle(owner)
    result = _import(owner, source, "json", json.dumps(VALUES))
    assert result.status_code == 200, result.get_json()
    assert result.get_json()["created"] == list(VALUES)
    exported = _export(owner, source)
    assert dotenv_values(stream=io.StringIO(exported.decode("utf-8")), interpolate=False) == VALUES
    assert _values(owner, source) == VALUES

    # Delete the keys, import the exported file, export again: identical bytes.
    for key in owner.get("/api/v1/keys").get_json()["keys"]:
        assert owner.delete(f"/api/v1/keys/{key['id']}").status_code == 204
    again = _import(owner, source, "dotenv", exported.decode("utf-8"))
    assert again.status_code == 200
    assert again.get_json() == {
        "created": list(VALUES),
        "updated": [],
        "unchanged": [],
        "skipped": [],
    }
    assert _export(owner, source) == exported
    assert _values(owner, source) == VALUES
    exported_json = _export(owner, source, "json")
    assert json.loads(exported_json) == VALUES
    # Re-importing either export into the bundle changes nothing.
    for fmt, body in (("dotenv", exported), ("json", exported_json)):
        same = _import(owner, source, fmt, body.decode("utf-8"), overwrite=True).get_json()
        assert same["unchanged"] == list(VALUES) and same["updated"] == same["created"] == []


def test_export_headers_and_audit(owner) -> None:
    bundle = _bundle(owner)
    _import(owner, bundle, "dotenv", "A=1\nB=2\n")
    dotenv = owner.get(f"/api/v1/bundles/{bundle}/export?format=dotenv")
    assert dotenv.headers["Content-Type"].startswith("text/plain")
    assert dotenv.headers["Content-Disposition"] == 'attachment; filename="production_api.env"'
    assert dotenv.headers["Cache-Control"] == "no-store"
    assert dotenv.data == b'A="1"\nB="2"\n'
    as_json = owner.get(f"/api/v1/bundles/{bundle}/export?format=json")
    assert as_json.headers["Content-Type"] == "application/json"
    assert as_json.headers["Content-Disposition"] == 'attachment; filename="production_api.json"'
    assert owner.get(f"/api/v1/bundles/{bundle}/export").data == dotenv.data  # dotenv by default
    assert owner.get(f"/api/v1/bundles/{bundle}/export?format=yaml").status_code == 400
    events = db.session.query(AuditEvent).filter_by(action="bundle.exported").all()
    assert len(events) == 3
    assert events[0].details == {"bundle": "production/api", "format": "dotenv", "keys": ["A", "B"]}


def test_import_overwrite_semantics(owner) -> None:
    bundle = _bundle(owner)
    other = _bundle(owner, "other")
    _import(owner, bundle, "dotenv", "SAME=1\nDIFF=old\n")
    # LIB_SAME and LIB_DIFF are library keys not yet in this bundle.
    _import(owner, other, "dotenv", "LIB_SAME=x\nLIB_DIFF=lib\n")
    content = "SAME=1\nDIFF=new\nNEW=n\nLIB_SAME=x\nLIB_DIFF=mine\nbad-name=1\n"

    kept = _import(owner, bundle, "dotenv", content).get_json()
    assert kept == {
        "created": ["NEW", "LIB_SAME"],
        "updated": [],
        "unchanged": ["SAME"],
        "skipped": ["bad-name", "DIFF", "LIB_DIFF"],
    }
    values = _values(owner, bundle)
    assert values == {"SAME": "1", "DIFF": "old", "NEW": "n", "LIB_SAME": "x"}

    replaced = _import(owner, bundle, "dotenv", content, overwrite=True).get_json()
    assert replaced == {
        "created": [],
        "updated": ["DIFF", "LIB_DIFF"],
        "unchanged": ["SAME", "NEW", "LIB_SAME"],
        "skipped": ["bad-name"],
    }
    assert _values(owner, bundle)["DIFF"] == "new"
    assert _values(owner, bundle)["LIB_DIFF"] == "mine"
    # A library key is one value shared by every bundle that holds it.
    assert _values(owner, other)["LIB_DIFF"] == "mine"
    positions = [k["name"] for k in owner.get(f"/api/v1/bundles/{bundle}").get_json()["keys"]]
    assert positions == ["SAME", "DIFF", "NEW", "LIB_SAME", "LIB_DIFF"]


def test_imported_keys_are_secret_and_audited_by_name(owner) -> None:
    bundle = _bundle(owner)
    _import(owner, bundle, "dotenv", "TOKEN=imported-canary\nnot.valid=1\n")
    detail = owner.get(f"/api/v1/bundles/{bundle}").get_json()
    assert detail["keys"][0]["is_secret"] is True and detail["keys"][0]["value"] is None
    event = db.session.query(AuditEvent).filter_by(action="bundle.imported").one()
    assert event.details == {
        "bundle": "production/api",
        "import_id": event.details["import_id"],  # issue #19: also on the versions it wrote
        "format": "dotenv",
        "overwrite": False,
        "created": ["TOKEN"],
        "updated": [],
        "unchanged": [],
        "skipped_count": 1,
    }


FAILING_IMPORTS = [
    ("json", '{"A": "new", "B": 2}'),
    ("json", '{"A": "new", "B": null}'),
    ("json", '{"A": "new", "B": "' + "x" * (64 * 1024 + 1) + '"}'),
    ("json", '{"A": "new", "B": "nul\\u0000"}'),
    ("json", '{"A": "new", "B": "\\ud800"}'),
    ("json", '["A"]'),
    ("json", "{broken"),
    ("json", "[" * 100_000),
    ("dotenv", 'A=new\nB="unterminated\n'),
    ("dotenv", "A=new\nB=" + "x" * (64 * 1024 + 1) + "\n"),
    ("dotenv", "A=new\nB=nul\x00\n"),
]


def test_a_failing_import_leaves_the_bundle_exactly_as_before(owner) -> None:
    bundle = _bundle(owner)
    _import(owner, bundle, "dotenv", "A=old\nKEEP=1\n")
    before_state, before_export = _state(), _export(owner, bundle)
    for fmt, content in FAILING_IMPORTS:
        response = _import(owner, bundle, fmt, content, overwrite=True)
        assert response.status_code == 400, (fmt, content[:40])
        assert response.get_json()["error"] == "validation_error"
        assert _state() == before_state, (fmt, content[:40])
    assert _export(owner, bundle) == before_export
    assert db.session.query(AuditEvent).filter_by(action="bundle.imported").count() == 1


def test_bad_import_bodies_are_400(owner) -> None:
    bundle = _bundle(owner)
    for body in (
        {},
        {"format": "yaml", "content": ""},
        {"format": "json"},
        {"format": "json", "content": {"A": "1"}},
        {"format": "json", "content": "{}", "overwrite": "yes"},
        {"format": "json", "content": "{}", "bundle_id": "x"},
    ):
        response = owner.post(f"/api/v1/bundles/{bundle}/import", body)
        assert response.status_code == 400, body
        assert response.get_json()["error"] == "validation_error"


def test_a_name_taken_mid_import_is_409_and_nothing_is_applied(owner) -> None:
    bundle = _bundle(owner)
    _import(owner, bundle, "dotenv", "KEEP=1\n")
    raced: list[str] = []

    def concurrent_writer(session: Session, *_: object) -> None:
        # Another api process creates RACE just before this import writes its own RACE.
        if raced or not any(isinstance(o, Key) and o.name == "RACE" for o in session.new):
            return
        raced.append("RACE")
        with db.engine.begin() as other:
            other.execute(
                insert(Key).values(
                    id="raced-key",
                    tenant_id="t-a",
                    name="RACE",
                    value="v1.x.y.z",
                    is_secret=True,
                    description="",
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )

    before = _state()
    event.listen(Session, "before_flush", concurrent_writer)
    try:
        response = _import(owner, bundle, "dotenv", "KEEP=2\nNEW=n\nRACE=r\n", overwrite=True)
    finally:
        event.remove(Session, "before_flush", concurrent_writer)
    assert raced == ["RACE"]
    assert response.status_code == 409
    assert response.get_json()["error"] == "conflict"
    after = _state()
    assert [row for row in after if "raced-key" not in row] == before  # only the other writer's row
    assert _values(owner, bundle) == {"KEEP": "1"}


def test_empty_import_and_empty_export(owner) -> None:
    bundle = _bundle(owner)
    result = _import(owner, bundle, "dotenv", "# only a comment\n\n").get_json()
    assert result == {"created": [], "updated": [], "unchanged": [], "skipped": []}
    assert _export(owner, bundle) == b""
    assert _export(owner, bundle, "json") == b"{}\n"


def _sqlite_bytes(database_url: str) -> bytes:
    path = Path(make_url(database_url).database or "")
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def test_canaries_never_reach_the_database_logs_or_audit(
    owner: SignedClient,
    settings: Settings,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    canaries = {
        "CANARY_CREATED": "canary-created-7f3a9c",
        "CANARY_IMPORTED": "canary-imported-b41d22",
        "CANARY_JSON": "canary-json-e90c17",
        "CANARY_PATCHED": "canary-patched-55aa01",
        "CANARY_ATTACHED": "canary-attached-c0ffee",
    }
    bundle = _bundle(owner)
    key = owner.post(
        "/api/v1/keys", {"name": "CANARY_CREATED", "value": canaries["CANARY_CREATED"]}
    ).get_json()
    owner.post(
        f"/api/v1/bundles/{bundle}/keys",
        {"name": "CANARY_ATTACHED", "value": canaries["CANARY_ATTACHED"]},
    )
    _import(owner, bundle, "dotenv", f"CANARY_IMPORTED={canaries['CANARY_IMPORTED']}\n")
    _import(owner, bundle, "json", json.dumps({"CANARY_JSON": canaries["CANARY_JSON"]}))
    owner.patch(f"/api/v1/keys/{key['id']}", {"value": canaries["CANARY_PATCHED"]})
    # Failures on the way must not leak either.
    _import(owner, bundle, "json", json.dumps({"CANARY_JSON": canaries["CANARY_JSON"], "X": 1}))
    _import(owner, bundle, "dotenv", f'BROKEN="{canaries["CANARY_JSON"]}\n')
    revealed = owner.get(f"/api/v1/keys/{key['id']}?reveal=true").get_json()["value"]
    assert revealed == canaries["CANARY_PATCHED"]
    exported = _export(owner, bundle).decode("utf-8")
    for name in ("CANARY_IMPORTED", "CANARY_JSON", "CANARY_ATTACHED"):
        assert canaries[name] in exported  # the canaries really went in and come back out

    db.session.commit()
    db.engine.dispose()  # flush every pooled connection's view of the file
    stored = _sqlite_bytes(settings.database_url)
    audit = json.dumps(
        [(e.action, e.target, e.details) for e in db.session.query(AuditEvent)],
        ensure_ascii=False,
    )
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records) + caplog.text
    redis_dump = repr([(k, redis_client.dump(k)) for k in redis_client.scan_iter()])
    assert len(stored) > 0 and "bundle.imported" in audit
    for value in canaries.values():
        assert value.encode() not in stored
        assert value not in audit
        assert value not in logs
        assert value not in redis_dump
