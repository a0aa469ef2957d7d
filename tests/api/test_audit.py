"""GET /audit: shape, names, newest first, cursor pagination, filters, limits, origin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from envcat.models import AuditEvent, db
from envcat.services import audit


@pytest.fixture
def owner(signed_as):
    return signed_as("u-owner", "t-a", "owner")


def _seed(count: int, tenant: str = "t-a", action: str = "test.event") -> None:
    for i in range(count):
        audit.record(tenant, "u-owner", action, f"thing:{i}", details={"n": i})


def test_event_shape_and_origin_from_the_request(owner) -> None:
    owner.post(
        "/api/v1/bundles",
        {"name": "b"},
        headers={"User-Agent": "envcat-bff/1.0"},
    )
    page = owner.get("/api/v1/audit").get_json()
    assert set(page) == {"events", "next_cursor", "people"}
    assert page["next_cursor"] is None
    (event,) = page["events"]
    assert set(event) == {
        "id",
        "actor",
        "action",
        "target",
        "target_kind",
        "target_id",
        "target_name",
        "target_exists",
        "bundle_id",
        "bundle_name",
        "bundle_exists",
        "ip",
        "user_agent",
        "at",
        "details",
    }
    assert event["action"] == "bundle.created"
    assert event["actor"] == "u-owner"
    assert page["people"] == {
        "u-owner": {"id": "u-owner", "email": "u-owner@example.test", "name": "u-owner"}
    }
    assert event["ip"] == "127.0.0.1"  # the test client's address
    assert event["user_agent"] == "envcat-bff/1.0"
    assert event["details"] == {"name": "b"}
    assert event["target"].startswith("bundle:")


def test_pages_walk_newest_first_without_gaps_or_repeats(owner) -> None:
    _seed(23)
    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        page = owner.get(f"/api/v1/audit?limit=5&cursor={cursor}").get_json()
        seen += [e["details"]["n"] for e in page["events"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == list(range(22, -1, -1))
    assert pages == 5


def test_exact_page_boundary_has_no_empty_trailing_page(owner) -> None:
    _seed(4)
    first = owner.get("/api/v1/audit?limit=2").get_json()
    second = owner.get(f"/api/v1/audit?limit=2&cursor={first['next_cursor']}").get_json()
    assert len(second["events"]) == 2
    assert second["next_cursor"] is None


def test_default_limit_is_50_and_max_is_200(owner) -> None:
    _seed(205)
    assert len(owner.get("/api/v1/audit").get_json()["events"]) == 50
    assert len(owner.get("/api/v1/audit?limit=200").get_json()["events"]) == 200


def _actions(client, query: str) -> list[str]:
    response = client.get(f"/api/v1/audit?{query}")
    assert response.status_code == 200, response.get_json()
    return [e["action"] for e in response.get_json()["events"]]


def test_action_filter_is_a_prefix(owner) -> None:
    _seed(3, action="key.revealed")
    _seed(2, action="bundle.created")
    _seed(1, action="request.approved")
    _seed(1, action="request.denied")
    assert _actions(owner, "action=key.revealed") == ["key.revealed"] * 3
    assert sorted(_actions(owner, "action=request")) == ["request.approved", "request.denied"]
    assert _actions(owner, "action=request.app") == ["request.approved"]
    assert _actions(owner, "action=nothing.here") == []
    assert len(_actions(owner, "action=")) == 7


def test_action_prefix_underscore_is_not_a_wildcard(owner) -> None:
    _seed(1, action="bundle.key_attached")
    _seed(1, action="bundle.keyxattached")
    assert _actions(owner, "action=bundle.key_") == ["bundle.key_attached"]


def test_actor_filter_finds_the_persons_events_and_their_deliveries(signed_as) -> None:
    owner = signed_as("u-owner", "t-a", "owner")
    signed_as("u-other", "t-a", "member")
    audit.record("t-a", "u-owner", "request.approved", "r" * 20, details={"bundle_id": "b1"})
    audit.record("t-a", "cli", "request.delivered", "r" * 20, details={"approved_by": "u-owner"})
    audit.record("t-a", "u-other", "request.approved", "s" * 20, details={"bundle_id": "b1"})
    assert _actions(owner, "actor=u-owner") == ["request.delivered", "request.approved"]
    assert _actions(owner, "actor=u-other") == ["request.approved"]
    assert _actions(owner, "actor=cli") == ["request.delivered"]
    assert _actions(owner, "actor=u-nobody") == []


def test_bundle_filter_finds_its_events_and_the_requests_that_released_it(owner) -> None:
    bundle = owner.post("/api/v1/bundles", {"name": "prod/api"}).get_json()
    other = owner.post("/api/v1/bundles", {"name": "staging/api"}).get_json()
    owner.post(f"/api/v1/bundles/{bundle['id']}/keys", {"name": "TOKEN", "value": "x"})
    audit.record(
        "t-a", "u-owner", "request.approved", "r" * 20, details={"bundle_id": bundle["id"]}
    )
    audit.record("t-a", "u-owner", "request.approved", "s" * 20, details={"bundle_id": other["id"]})
    found = _actions(owner, f"bundle_id={bundle['id']}")
    assert found == ["request.approved", "bundle.key_attached", "bundle.created"]


def test_target_filter_shows_one_requests_lifecycle(owner) -> None:
    request_id = "r" * 22
    audit.record("t-a", "u-owner", "request.approved", request_id)
    audit.record("t-a", "u-owner", "request.approved", "s" * 22)
    audit.record("t-a", "cli", "request.delivered", request_id)
    found = _actions(owner, f"target={request_id}")
    assert found == ["request.delivered", "request.approved"]
    assert _actions(owner, "target=r") == []  # exact, not a prefix


def _at(event_id: int, when: datetime) -> None:
    # Moving an event in time breaks its hash, which this listing test does not read.
    event = db.session.get(AuditEvent, event_id)
    assert event is not None
    event.at = when
    db.session.commit()


def test_date_range_since_inclusive_until_exclusive(owner) -> None:
    day = datetime(2026, 3, 10, tzinfo=UTC)
    for offset, action in ((-1, "old.event"), (0, "day.start"), (1, "next.day")):
        _at(audit.record("t-a", "u-owner", action).id, day + timedelta(days=offset))
    assert _actions(owner, "since=2026-03-10&until=2026-03-11") == ["day.start"]
    assert _actions(owner, "since=2026-03-10T00:00:00Z") == ["next.day", "day.start"]
    assert _actions(owner, "until=2026-03-10T00:00:00%2B00:00") == ["old.event"]
    # A time with another zone means the same instant: 01:00+01:00 is midnight UTC.
    assert _actions(owner, "since=2026-03-10T01:00:00%2B01:00&until=2026-03-11") == ["day.start"]


def test_names_and_links_of_targets(owner) -> None:
    bundle = owner.post("/api/v1/bundles", {"name": "prod/api"}).get_json()
    owner.patch(f"/api/v1/bundles/{bundle['id']}", {"name": "prod/web"})
    gone = owner.post("/api/v1/bundles", {"name": "temp"}).get_json()
    owner.delete(f"/api/v1/bundles/{gone['id']}")
    request_id = "r" * 22
    audit.record(
        "t-a",
        "u-owner",
        "request.approved",
        request_id,
        details={"bundle_id": bundle["id"], "bundle_name": "prod/api", "keys": ["TOKEN"]},
    )
    events = owner.get("/api/v1/audit").get_json()["events"]
    approved, deleted, created_gone, _updated, created = events
    assert approved["target_kind"] == "request"
    assert approved["target_id"] == request_id
    assert approved["bundle_id"] == bundle["id"]
    assert approved["bundle_name"] == "prod/web"  # the current name
    assert approved["bundle_exists"] is True
    assert approved["details"]["keys"] == ["TOKEN"]
    assert created["target_kind"] == "bundle"
    assert created["target_name"] == "prod/web"
    assert created["target_exists"] is True
    assert deleted["target_name"] == "temp"  # recorded, the bundle is gone
    assert deleted["target_exists"] is False
    assert deleted["bundle_exists"] is False
    assert created_gone["target_id"] == gone["id"]


def test_people_name_approvers_and_skip_machines(signed_as) -> None:
    owner = signed_as("u-owner", "t-a", "owner")
    signed_as("u-approver", "t-a", "member")
    audit.record(
        "t-a", "system", "request.expired", "r" * 20, details={"approved_by": "u-approver"}
    )
    audit.record("t-a", "u-owner", "key.revealed", "key:k1", details={"name": "TOKEN"})
    page = owner.get("/api/v1/audit").get_json()
    assert set(page["people"]) == {"u-owner", "u-approver"}
    assert page["people"]["u-approver"]["email"] == "u-approver@example.test"
    people = owner.get("/api/v1/audit/people").get_json()["people"]
    assert [p["id"] for p in people] == ["u-owner"]  # only actors, never "system"


def test_an_admin_tokens_changes_name_the_token_of_this_workspace_only(signed_as) -> None:
    owner = signed_as("u-owner", "t-a", "owner")
    stranger = signed_as("u-stranger", "t-b", "owner")
    body = {"name": "ci apply", "scopes": ["admin"]}
    ours = owner.post("/api/v1/service-tokens", body).get_json()["id"]
    theirs = stranger.post("/api/v1/service-tokens", body).get_json()["id"]
    audit.record("t-a", f"token:{ours}", "bundle.created", "bundle:b1")
    audit.record("t-a", f"token:{theirs}", "bundle.created", "bundle:b2")  # a forged actor
    people = owner.get("/api/v1/audit").get_json()["people"]
    assert people[f"token:{ours}"] == {
        "id": f"token:{ours}",
        "email": None,
        "name": "service token ci apply",
    }
    assert f"token:{theirs}" not in people  # another workspace's token is not named here
    listed = owner.get("/api/v1/audit/people").get_json()["people"]
    assert [p["name"] for p in listed if p["id"].startswith("token:")] == ["service token ci apply"]


def test_people_are_only_the_callers_tenant(signed_as) -> None:
    owner = signed_as("u-owner", "t-a", "owner")
    signed_as("u-stranger", "t-b", "owner")
    audit.record("t-b", "u-stranger", "key.revealed", "key:k1")
    assert owner.get("/api/v1/audit/people").get_json()["people"] == []


def test_only_the_callers_tenant(owner) -> None:
    _seed(2, tenant="t-other")
    _seed(1)
    assert len(owner.get("/api/v1/audit").get_json()["events"]) == 1


BAD_QUERIES = [
    "limit=0",
    "limit=201",
    "limit=-1",
    "limit=ten",
    "cursor=not-a-cursor",
    "cursor=" + "A" * 65,
    "cursor=YTEyYQ",  # base64 of "a12a"
    "cursor=Yg",  # base64 of "b"
    "cursor=YTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # "a" and 20 digits
    "action=DROP%20TABLE",
    "action=" + "a" * 65,
    "actor=" + "a" * 129,
    "actor=a%20b",
    "bundle_id=../x",
    "target=a%20b",
    "target=" + "a" * 256,
    "since=yesterday",
    "since=0001-01-01T00:00:00%2B05:00",
    "until=9999-12-31T23:59:59-05:00",
    "until=2026-13-01",
    "since=2026-03-11&until=2026-03-10",
    "since=2026-03-10&until=2026-03-10",
]


def test_bad_queries_are_400(owner) -> None:
    for query in BAD_QUERIES:
        response = owner.get(f"/api/v1/audit?{query}")
        assert response.status_code == 400, query
        assert response.get_json()["error"] == "validation_error", query


def test_every_role_may_read_the_log(signed_as) -> None:
    _seed(1)
    for role in ("viewer", "member", "admin"):
        client = signed_as(f"u-{role}", "t-a", role)
        assert len(client.get("/api/v1/audit").get_json()["events"]) == 1, role
