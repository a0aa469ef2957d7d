"""The approval statement a passkey signs (issue #20): one canonical form on both sides."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from envcat.core.approval_statement import ApprovalStatement, StatementError

FIELDS: dict[str, Any] = {
    "request_id": "req-1",
    "cli_public_key": "pub+/=",
    "workspace": "acme",
    "bundle_id": "b-1",
    "keys": ["ZED", "API_KEY", "DATABASE_URL"],
    "user_code": "WDJB-MJHT",
    "decided_at": 1_700_000_000,
}


def test_canonical_form_is_sorted_compact_utf8_and_keys_are_sorted() -> None:
    statement = ApprovalStatement.of(**{**FIELDS, "workspace": "ünï"})
    text = statement.canonical()
    assert (
        text
        == (
            '{"bundle_id":"b-1","cli_public_key":"pub+/=","decided_at":1700000000,'
            '"keys":["API_KEY","DATABASE_URL","ZED"],"request_id":"req-1",'
            '"user_code":"WDJB-MJHT","workspace":"ünï"}'
        ).encode()
    )
    assert statement.challenge() == hashlib.sha256(text).digest()
    # the order names come in does not matter; the statement is the same
    again = ApprovalStatement.of(
        **{**FIELDS, "workspace": "ünï", "keys": ["DATABASE_URL", "ZED", "API_KEY"]}
    )
    assert again.challenge() == statement.challenge()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "req-2"),
        ("cli_public_key", "another"),
        ("workspace", "other"),
        ("bundle_id", "b-2"),
        ("keys", ["API_KEY", "DATABASE_URL", "ZED", "EXTRA"]),
        ("keys", ["API_KEY", "DATABASE_URL"]),
        ("user_code", "XXXX-XXXX"),
        ("decided_at", 1_700_000_001),
    ],
)
def test_every_field_changes_the_challenge(field: str, value: object) -> None:
    base = ApprovalStatement.of(**FIELDS)
    changed = ApprovalStatement.of(**{**FIELDS, field: value})
    assert changed.challenge() != base.challenge()


def test_parsing_round_trips_and_refuses_other_shapes() -> None:
    statement = ApprovalStatement.of(**FIELDS)
    assert ApprovalStatement.from_dict(json.loads(statement.canonical())) == statement
    good = statement.as_dict()
    for bad in (
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "keys"},
        {**good, "keys": ["ZED", "API_KEY"]},  # not sorted
        {**good, "keys": ["A", "A"]},
        {**good, "decided_at": 1.5},
        {**good, "decided_at": True},
        {**good, "workspace": 7},
    ):
        with pytest.raises(StatementError):
            ApprovalStatement.from_dict(bad)
