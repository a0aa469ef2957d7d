"""Canary values through every path a value takes, under real processes: they reach the
person who may see them, and nowhere else.

Complements tests/test_canary_leaks.py (one approval, in-process, the api and worker
logs) with the whole product on real processes logging at DEBUG: keys created
through the bff, an approval on the approval page, delivery to the real CLI, reveal,
export, import, and calls refused because of their values. Then every byte that
could hold a value is scanned: every key and value of every Redis database (app
data and broker), every Celery message (queues and unacked, bodies decoded), the
SQLite database and its -wal/-shm files, the logs of the api, the bff and the
worker, the CLI's stderr, and the bodies of the refused calls.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from pathlib import Path

import httpx
import pytest

from envcat.workers.factory import QUEUES
from tests.hardening.flows import BffSession, CliRun
from tests.hardening.processes import ProcessStack, cli_environment
from tests.hardening.snapshots import celery_messages, redis_bytes

TOKEN = secrets.token_hex(6)
CANARIES = {
    "LEAK_DB_PASSWORD": f"canary-db-{TOKEN}",
    "LEAK_API_TOKEN": f"canary-api-{TOKEN} with spaces and 'quotes'",
    "LEAK_PEM": f"-----BEGIN canary-pem-{TOKEN}-----\nMIIB\n-----END-----\n",
}
REFUSED_CANARY = f"canary-refused-{TOKEN}"
PASSWORD = f"canary-password-{TOKEN}"


def _needles() -> list[bytes]:
    """Each canary's distinctive token, raw and base64-encoded (at two alignments)."""
    tokens = [f"canary-{kind}-{TOKEN}" for kind in ("db", "api", "pem", "refused", "password")]
    found = []
    for token in tokens:
        raw = token.encode()
        found += [raw, base64.b64encode(raw)[:-4], base64.b64encode(b"x" + raw)[4:-4]]
    return found


def _assert_clean(where: str, blob: bytes | str) -> None:
    data = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
    for needle in _needles():
        assert needle not in data, f"a canary leaked into {where}: {needle!r}"


def _create_bundle(person: BffSession, name: str, values: dict[str, str]) -> str:
    reply = person.api("POST", "/api/v1/bundles", {"name": name})
    assert reply.status_code == 201, reply.text
    bundle_id: str = reply.json()["id"]
    for key, value in values.items():
        added = person.api(
            "POST", f"/api/v1/bundles/{bundle_id}/keys", {"name": key, "value": value}
        )
        assert added.status_code == 201, added.text
    return bundle_id


def _deliver(stack: ProcessStack, person: BffSession, bundle_id: str, home: Path) -> str:
    """The real CLI asks, the person approves on the approval page; return the CLI's stderr."""
    workspace = person.api("GET", "/api/v1/me").json()["tenant"]["slug"]
    env = cli_environment(home, workspace)
    cli = CliRun.start(stack.bff_url, "leak/scan", "--timeout", "60", env=env)
    try:
        request_id = cli.request_id()
        page = person.client.get(f"/approve/{request_id}")
        assert page.status_code == 200
        decided = person.form(
            f"/approve/{request_id}",
            {"decision": "approve", "bundle_id": bundle_id, "include_keys": list(CANARIES)},
        )
        assert decided.status_code == 200, decided.text
        code, values, stderr = cli.finish(timeout=60)
    finally:
        cli.stop()
    assert code == 0, stderr
    assert values == CANARIES  # the values did travel, sealed, to the CLI
    return stderr


def _use_values(person: BffSession, bundle_id: str) -> None:
    """Reveal, export, and import the export into a second bundle."""
    detail = person.api("GET", f"/api/v1/bundles/{bundle_id}").json()
    assert all(key["value"] is None for key in detail["keys"])  # masked
    revealed = person.api("GET", f"/api/v1/keys/{detail['keys'][0]['id']}?reveal=true")
    assert revealed.json()["value"] in CANARIES.values()
    exported = person.api("GET", f"/api/v1/bundles/{bundle_id}/export?format=dotenv")
    assert exported.status_code == 200
    assert _needles()[0] in exported.content  # the needles do find a value where it belongs
    copy = person.api("POST", "/api/v1/bundles", {"name": "leak/copy"}).json()["id"]
    imported = person.api(
        "POST",
        f"/api/v1/bundles/{copy}/import",
        {"format": "dotenv", "content": exported.text, "overwrite": True},
    )
    assert imported.status_code == 200, imported.text
    assert sorted(imported.json()["unchanged"] + imported.json()["created"]) == sorted(CANARIES)


def _refused_calls(person: BffSession) -> list[httpx.Response]:
    """Calls whose values are refused: none of the refusals may quote the value."""
    key_id = person.api("GET", "/api/v1/keys").json()["keys"][0]["id"]
    bundle_id = person.api("GET", "/api/v1/bundles").json()["bundles"][0]["id"]
    return [
        person.api("POST", "/api/v1/keys", {"name": "bad name", "value": REFUSED_CANARY}),
        person.api("POST", "/api/v1/keys", {"name": "NUL_VALUE", "value": REFUSED_CANARY + "\0"}),
        person.api("POST", "/api/v1/keys", {"name": "LONG", "value": REFUSED_CANARY * 5000}),
        person.api("POST", "/api/v1/keys", {"name": "WRONG_TYPE", "value": [REFUSED_CANARY]}),
        person.api("PATCH", f"/api/v1/keys/{key_id}", {"value": REFUSED_CANARY, "bogus": 1}),
        person.api(
            "POST",
            f"/api/v1/bundles/{bundle_id}/import",
            {"format": "dotenv", "content": f'BROKEN="{REFUSED_CANARY}\nOTHER=1\n'},
        ),
        person.api(
            "POST",
            f"/api/v1/bundles/{bundle_id}/import",
            {"format": "json", "content": f'{{"A": ["{REFUSED_CANARY}"]}}'},
        ),
    ]


@pytest.mark.slow
def test_canaries_reach_the_cli_and_nowhere_else(
    process_stack: ProcessStack, tmp_path: Path
) -> None:
    person = BffSession.sign_up(process_stack.bff_url, f"leak-{TOKEN}@example.test", PASSWORD)
    bundle_id = ""
    try:
        bundle_id = _create_bundle(person, "leak/scan", CANARIES)
        cli_stderr = _deliver(process_stack, person, bundle_id, tmp_path)
        _use_values(person, bundle_id)
        refused = _refused_calls(person)
    finally:
        person.client.close()
    assert all(400 <= reply.status_code < 500 for reply in refused), [r.text for r in refused]
    time.sleep(0.5)  # let every process flush its last log lines

    settings = process_stack.settings
    _assert_clean("the refusals", "\n".join(reply.text for reply in refused))
    _assert_clean("the CLI's stderr", cli_stderr)
    logs = process_stack.procs.logs()
    # the scan sees this flow's DEBUG logs, from the worker too: its task message (the
    # request id and a MAC, nothing else since issue #12) is in the worker's log
    request_id = re.search(r"/approve/([A-Za-z0-9_-]+)", cli_stderr)
    assert request_id is not None and request_id.group(1) in logs
    assert '"level": "debug"' in logs and '"process": "worker"' in logs
    assert "envcat.encrypt_from_bundle" in logs
    _assert_clean("the process logs", logs)
    _assert_clean("Redis (every database)", redis_bytes(process_stack.redis.url))
    messages = celery_messages(settings.broker_url, list(QUEUES))
    _assert_clean("the Celery messages", messages)
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    files = list(database.parent.glob(database.name + "*"))
    assert database in files
    for path in files:
        _assert_clean(path.name, path.read_bytes())
