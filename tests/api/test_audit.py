"""GET /audit: shape, newest first, cursor pagination, action filter, limits, origin."""

from __future__ import annotations

import pytest

from envcat.services import audit


@pytest.fixture
def owner(signed_as):  # type: ignore[no-untyped-def]
    return signed_as("u-owner", "t-a", "owner")


def _seed(count: int, tenant: str = "t-a", action: str = "test.event") -> None:
    for i in range(count):
        audit.record(tenant, "u-owner", action, f"thing:{i}", details={"n": i})


def test_event_shape_and_origin_from_the_request(owner) -> None:  # type: ignore[no-untyped-def]
    owner.post(
        "/api/v1/bundles",
        {"name": "b"},
        headers={"X-Forwarded-For": "203.0.113.9", "User-Agent": "envcat-bff/1.0"},
    )
    page = owner.get("/api/v1/audit").get_json()
    assert set(page) == {"events", "next_cursor"}
    assert page["next_cursor"] is None
    (event,) = page["events"]
    assert set(event) == {"id", "actor", "action", "target", "ip", "user_agent", "at", "details"}
    assert event["action"] == "bundle.created"
    assert event["actor"] == "u-owner"
    assert event["ip"] == "203.0.113.9"
    assert event["user_agent"] == "envcat-bff/1.0"
    assert event["details"] == {"name": "b"}
    assert event["target"].startswith("bundle:")


def test_pages_walk_newest_first_without_gaps_or_repeats(owner) -> None:  # type: ignore[no-untyped-def]
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


def test_exact_page_boundary_has_no_empty_trailing_page(owner) -> None:  # type: ignore[no-untyped-def]
    _seed(4)
    first = owner.get("/api/v1/audit?limit=2").get_json()
    second = owner.get(f"/api/v1/audit?limit=2&cursor={first['next_cursor']}").get_json()
    assert len(second["events"]) == 2
    assert second["next_cursor"] is None


def test_default_limit_is_50_and_max_is_200(owner) -> None:  # type: ignore[no-untyped-def]
    _seed(205)
    assert len(owner.get("/api/v1/audit").get_json()["events"]) == 50
    assert len(owner.get("/api/v1/audit?limit=200").get_json()["events"]) == 200


def test_action_filter(owner) -> None:  # type: ignore[no-untyped-def]
    _seed(3, action="key.revealed")
    _seed(2, action="bundle.created")
    page = owner.get("/api/v1/audit?action=key.revealed").get_json()
    assert [e["action"] for e in page["events"]] == ["key.revealed"] * 3
    assert owner.get("/api/v1/audit?action=nothing.here").get_json()["events"] == []
    assert len(owner.get("/api/v1/audit?action=").get_json()["events"]) == 5


def test_only_the_callers_tenant(owner) -> None:  # type: ignore[no-untyped-def]
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
]


def test_bad_queries_are_400(owner) -> None:  # type: ignore[no-untyped-def]
    for query in BAD_QUERIES:
        response = owner.get(f"/api/v1/audit?{query}")
        assert response.status_code == 400, query
        assert response.get_json()["error"] == "validation_error", query


def test_every_role_may_read_the_log(signed_as) -> None:  # type: ignore[no-untyped-def]
    _seed(1)
    for role in ("viewer", "member", "admin"):
        client = signed_as(f"u-{role}", "t-a", role)
        assert len(client.get("/api/v1/audit").get_json()["events"]) == 1, role
