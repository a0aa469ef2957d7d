"""The hash-chained audit log on SQLite and PostgreSQL: intact after a real flow, tamper-evident,
and never forked by concurrent writers."""

from __future__ import annotations

import threading

from flask import Flask
from sqlalchemy import select, text

from envcat.models import AuditEvent, db
from envcat.services import audit
from tests.support.signed import member_client


def _flow(app: Flask, tenant: str) -> list[int]:
    """Bundle, keys, import, export, reveal, edits and deletes through the api; event ids."""
    client = member_client(app, f"u-{tenant}", tenant)
    bundle = client.post("/api/v1/bundles", {"name": "production/api"}).get_json()["id"]
    key = client.post("/api/v1/keys", {"name": "TOKEN", "value": "t0k3n"}).get_json()["id"]
    steps = [
        client.post(f"/api/v1/bundles/{bundle}/keys", {"key_id": key}),
        client.post(f"/api/v1/bundles/{bundle}/import", {"format": "dotenv", "content": "A=1"}),
        client.get(f"/api/v1/bundles/{bundle}/export"),
        client.get(f"/api/v1/keys/{key}?reveal=true"),
        client.patch(f"/api/v1/keys/{key}", {"value": "n3w"}),
        client.delete(f"/api/v1/bundles/{bundle}/keys/{key}"),
        client.delete(f"/api/v1/keys/{key}"),
    ]
    assert all(r.status_code < 300 for r in steps)
    statement = select(AuditEvent.id).where(AuditEvent.tenant_id == tenant).order_by(AuditEvent.id)
    return list(db.session.execute(statement).scalars())


def test_chain_verifies_after_a_flow_and_catches_tampering(chain_app: Flask) -> None:
    flows = {t: _flow(chain_app, t) for t in ("t-edit", "t-delete", "t-reorder", "t-clean")}
    for tenant, ids in flows.items():
        report = audit.verify_chain(tenant)
        assert report.is_intact and report.events == len(ids) == 9, tenant

    edited = db.session.get(AuditEvent, flows["t-edit"][4])
    assert edited is not None
    edited.details = {**edited.details, "name": "innocent"}
    db.session.commit()
    assert audit.verify_chain("t-edit").broken_at == flows["t-edit"][4]

    db.session.execute(
        text("DELETE FROM audit_events WHERE id = :id"), {"id": flows["t-delete"][3]}
    )
    db.session.commit()
    assert audit.verify_chain("t-delete").broken_at == flows["t-delete"][4]

    first, second = flows["t-reorder"][5], flows["t-reorder"][6]
    swap = "UPDATE audit_events SET id = :new WHERE id = :old"
    db.session.execute(text(swap), {"old": first, "new": -1})
    db.session.execute(text(swap), {"old": second, "new": first})
    db.session.execute(text(swap), {"old": -1, "new": second})
    db.session.commit()
    db.session.expire_all()
    assert audit.verify_chain("t-reorder").broken_at == first

    assert audit.verify_chain("t-clean").is_intact  # tampering elsewhere is contained


def test_concurrent_appends_never_fork_the_chain(chain_app: Flask) -> None:
    threads_count, per_thread = 8, 12
    barrier = threading.Barrier(threads_count)
    appended: list[int] = []

    def append(worker: int) -> None:
        with chain_app.app_context():
            barrier.wait()
            for n in range(per_thread):
                # the chain head is locked, not retried: every append lands at the first try
                event = audit.record("t-race", f"u-{worker}", "test.append", details={"n": n})
                appended.append(event.id)
            db.session.remove()

    threads = [threading.Thread(target=append, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(appended) == threads_count * per_thread  # contention is waited out, not refused
    report = audit.verify_chain("t-race")
    assert report.is_intact
    # One linear chain holding exactly the appends that returned: no fork, no orphan.
    assert report.events == len(appended) > 0
    rows = db.session.execute(
        select(AuditEvent.id, AuditEvent.prev_hash).where(AuditEvent.tenant_id == "t-race")
    ).all()
    assert sorted(r.id for r in rows) == sorted(appended)
    assert len({r.prev_hash for r in rows}) == len(rows)
