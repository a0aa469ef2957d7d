"""A change and its audit event commit or fail together (issue #13), on SQLite and PostgreSQL.

The database itself refuses the event (a trigger, tests/support/audit_faults.py): the call
answers a clean 503 and the change is not persisted. Conversely, a unit of work that fails
after its event was appended leaves no event.
"""

from __future__ import annotations

import pytest
import redis
from flask import Flask
from sqlalchemy import func, select, text
from werkzeug.test import TestResponse

from envcat.core.schemas.bundles import BundleCreate, BundleUpdate
from envcat.models import AuditEvent, Bundle, BundleKey, Key, KeyVersion, Membership, db
from envcat.services import audit, bundles
from envcat.services.access_requests import store
from envcat.services.tenancy import Actor
from envcat.services.transactions import transaction
from tests.support import present
from tests.support.api import REQUESTS, WORKSPACE, Cli, SeedKey, audit_actions, seed_bundle
from tests.support.audit_faults import refused_audit
from tests.support.signed import SignedClient, add_member, member_client

BUNDLES = "/api/v1/bundles"


def _refused(response: TestResponse) -> None:
    """The clean error of a refused audit event: 503, the JSON error shape, no detail leaked."""
    body = response.get_json()
    assert response.status_code == 503, body
    assert body["error"] == "unavailable" and "nothing was changed" in body["message"]


def _owner(app: Flask) -> SignedClient:
    return member_client(app, "u-owner", WORKSPACE)


def _bundle(owner: SignedClient, name: str = "production/api") -> str:
    created = owner.post(BUNDLES, {"name": name})
    assert created.status_code == 201
    bundle_id: str = created.get_json()["id"]
    return bundle_id


def test_a_refused_event_leaves_a_bundle_uncreated_and_unrenamed(chain_app: Flask) -> None:
    owner = _owner(chain_app)
    bundle_id = _bundle(owner)
    before = audit_actions(WORKSPACE)
    with refused_audit():
        _refused(owner.patch(f"{BUNDLES}/{bundle_id}", {"name": "renamed"}))
        _refused(owner.post(BUNDLES, {"name": "staging/api"}))
    assert owner.get(f"{BUNDLES}/{bundle_id}").get_json()["name"] == "production/api"
    assert db.session.execute(select(Bundle.name)).scalars().all() == ["production/api"]
    assert audit_actions(WORKSPACE) == before
    assert owner.patch(f"{BUNDLES}/{bundle_id}", {"name": "renamed"}).status_code == 200


def test_a_refused_event_leaves_no_key_and_no_version(chain_app: Flask) -> None:
    owner = _owner(chain_app)
    with refused_audit("key.created"):
        _refused(owner.post("/api/v1/keys", {"name": "TOKEN", "value": "t0k3n"}))
    assert db.session.execute(select(func.count()).select_from(Key)).scalar_one() == 0
    assert db.session.execute(select(func.count()).select_from(KeyVersion)).scalar_one() == 0
    assert audit_actions(WORKSPACE) == []
    assert owner.post("/api/v1/keys", {"name": "TOKEN", "value": "t0k3n"}).status_code == 201


def test_a_refused_event_leaves_an_import_unapplied(chain_app: Flask) -> None:
    owner = _owner(chain_app)
    bundle_id = _bundle(owner)
    body = {"format": "dotenv", "content": "A=1\nB=2\n"}
    with refused_audit("bundle.imported"):
        _refused(owner.post(f"{BUNDLES}/{bundle_id}/import", body))
    assert db.session.execute(select(func.count()).select_from(Key)).scalar_one() == 0
    assert db.session.execute(select(func.count()).select_from(BundleKey)).scalar_one() == 0
    assert owner.post(f"{BUNDLES}/{bundle_id}/import", body).status_code == 200


def test_a_refused_event_leaves_a_members_role_unchanged(chain_app: Flask) -> None:
    owner = _owner(chain_app)
    add_member("u-bob", WORKSPACE, "member")
    with refused_audit("member.role_changed"):
        _refused(owner.patch("/api/v1/members/u-bob", {"role": "admin"}))
    db.session.expire_all()
    assert present(db.session.get(Membership, ("u-bob", WORKSPACE))).role == "member"
    assert audit_actions(WORKSPACE) == []


def test_a_refused_approval_event_records_no_approval_and_queues_nothing(
    chain_app: Flask, redis_client: redis.Redis, broker_url: str
) -> None:
    owner = _owner(chain_app)
    bundle_id = seed_bundle(WORKSPACE, "production/api", [SeedKey("API_KEY", "sk-1")])
    cli = Cli.start(chain_app.test_client())
    body = {"bundle_id": bundle_id, "include_keys": ["API_KEY"]}
    approve = f"{REQUESTS}/{cli.id}/encrypt-from-bundle"
    broker = redis.Redis.from_url(broker_url)
    queued = broker.llen("approvals")
    with refused_audit("request.approved"):
        _refused(owner.post(approve, body))
    stored = store.get(redis_client, cli.id)
    assert stored is not None and stored.status == "pending" and stored.approval is None
    assert broker.llen("approvals") == queued  # audit before release: no delivery task
    assert audit_actions(WORKSPACE) == []
    accepted = owner.post(approve, body)  # still approvable, and now approved once
    assert accepted.status_code == 202
    assert audit_actions(WORKSPACE) == [("request.approved", cli.id)]
    assert broker.llen("approvals") == queued + 1
    broker.close()


def test_a_unit_failing_after_its_first_event_leaves_neither_change_nor_event(
    chain_app: Flask,
) -> None:
    """create-and-attach appends key.created, then its attach event is refused: the key
    and its already appended event go together."""
    owner = _owner(chain_app)
    bundle_id = _bundle(owner)
    before = audit_actions(WORKSPACE)
    with refused_audit("bundle.key_attached"):
        _refused(owner.post(f"{BUNDLES}/{bundle_id}/keys", {"name": "TOKEN", "value": "v"}))
    assert db.session.execute(select(func.count()).select_from(Key)).scalar_one() == 0
    assert audit_actions(WORKSPACE) == before  # no key.created either


def test_a_change_failing_after_its_event_was_appended_leaves_no_event(chain_app: Flask) -> None:
    owner = _owner(chain_app)
    bundle_id = _bundle(owner)
    before = audit_actions(WORKSPACE)
    actor = Actor(WORKSPACE, "u-owner")
    with pytest.raises(RuntimeError, match="after the event"), transaction():
        bundle = db.session.get(Bundle, bundle_id)
        assert bundle is not None
        bundle.name = "renamed"
        actor.append("bundle.updated", f"bundle:{bundle_id}", {"name": "production/api"})
        raise RuntimeError("the unit fails after the event")
    db.session.expire_all()
    assert present(db.session.get(Bundle, bundle_id)).name == "production/api"
    assert audit_actions(WORKSPACE) == before
    assert audit.verify_chain(WORKSPACE).is_intact


def test_a_commit_refused_after_the_event_was_flushed_leaves_no_event(
    chain_app: Flask,
) -> None:
    """PostgreSQL checks a deferred constraint trigger at COMMIT, after the event's flush."""
    if db.session.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite has no deferred triggers; the test above covers it")
    owner = _owner(chain_app)
    bundle_id = _bundle(owner)
    before = audit_actions(WORKSPACE)
    db.session.execute(
        text(
            "CREATE FUNCTION refuse_rename() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'rename refused at commit'; END $$"
        )
    )
    db.session.execute(
        text(
            "CREATE CONSTRAINT TRIGGER refuse_rename AFTER UPDATE ON bundles "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_rename()"
        )
    )
    db.session.commit()
    actor = Actor(WORKSPACE, "u-owner")
    with pytest.raises(Exception, match="rename refused at commit"):
        bundles.update_bundle(actor, bundle_id, BundleUpdate(name="renamed"))
    db.session.expire_all()
    assert present(db.session.get(Bundle, bundle_id)).name == "production/api"
    assert audit_actions(WORKSPACE) == before


def test_a_transaction_inside_another_joins_it(chain_app: Flask) -> None:
    """A service's own transaction() called inside the caller's commits nothing by itself."""
    owner = _owner(chain_app)
    actor = Actor(WORKSPACE, "u-owner")
    with pytest.raises(RuntimeError, match="outer unit fails"), transaction():
        made = bundles.create_bundle(actor, BundleCreate(name="joined"))
        raise RuntimeError("the outer unit fails")
    assert owner.get(f"{BUNDLES}/{made.id}").status_code == 404
    assert audit_actions(WORKSPACE) == []


def test_append_outside_a_unit_of_work_is_refused(chain_app: Flask) -> None:
    with pytest.raises(RuntimeError, match="inside transaction"):
        audit.append(WORKSPACE, "u-owner", "test.event")
    assert db.session.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == 0
