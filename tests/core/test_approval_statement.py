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


# --- break-glass: the owner's reason is signed (issues #17 and #20) ------------------------

ORDINARY = (
    b'{"bundle_id":"b-1","cli_public_key":"pub+/=","decided_at":1700000000,'
    b'"keys":["API_KEY","DATABASE_URL","ZED"],"request_id":"req-1",'
    b'"user_code":"WDJB-MJHT","workspace":"acme"}'
)
REASON = "INC-42 checkout down — approvers asleep"


def test_an_ordinary_statement_keeps_its_bytes_and_challenge() -> None:
    # the bytes and challenge written before break-glass joined the statement: every
    # passkey approval made since (and every CLI that checks one) stays valid
    for statement in (
        ApprovalStatement.of(**FIELDS),
        ApprovalStatement.of(**FIELDS, break_glass=""),
        ApprovalStatement.from_dict(json.loads(ORDINARY)),
    ):
        assert statement.canonical() == ORDINARY
        assert "break_glass" not in statement.as_dict()
        assert statement.challenge().hex() == (
            "324bef33a1e50b87bdd53d58a0815788cdf17ee503c57c215a0c63ff9f01e46b"
        )


def test_a_break_glass_statement_carries_its_reason() -> None:
    statement = ApprovalStatement.of(**FIELDS, break_glass=REASON)
    assert (
        statement.canonical()
        == (
            '{"break_glass":"INC-42 checkout down — approvers asleep","bundle_id":"b-1",'
            '"cli_public_key":"pub+/=","decided_at":1700000000,'
            '"keys":["API_KEY","DATABASE_URL","ZED"],"request_id":"req-1",'
            '"user_code":"WDJB-MJHT","workspace":"acme"}'
        ).encode()
    )
    assert ApprovalStatement.from_dict(json.loads(statement.canonical())) == statement
    # a release is not the ordinary approval, and another reason is another statement
    other = ApprovalStatement.of(**FIELDS, break_glass="routine rotation")
    challenges = {
        statement.challenge(),
        other.challenge(),
        ApprovalStatement.of(**FIELDS).challenge(),
    }
    assert len(challenges) == 3
    longest = ApprovalStatement.of(**FIELDS, break_glass="x" * 500)
    assert ApprovalStatement.from_dict(longest.as_dict()) == longest


@pytest.mark.parametrize(
    "changes",
    [
        {"break_glass": ""},
        {"break_glass": "   "},
        {"break_glass": None},
        {"break_glass": 42},
        {"break_glass": True},
        {"break_glass": ["INC-42"]},
        {"break_glass": {"reason": "INC-42"}},
        {"break_glass": "INC-42\nsecond line"},
        {"break_glass": "INC-42\r"},
        {"break_glass": "tab\there"},
        {"break_glass": "bell\x07"},
        {"break_glass": "x" * 501},
        {"break_glass": REASON, "extra": 1},  # eight fields, but one is not break_glass
        {"reason": REASON},  # the envelope's name for it, not the statement's
        {"breakglass": REASON},
    ],
    ids=lambda changes: repr(changes)[:40],
)
def test_parsing_refuses_a_break_glass_field_that_is_not_one_line_of_reason(
    changes: dict[str, Any],
) -> None:
    with pytest.raises(StatementError):
        ApprovalStatement.from_dict({**json.loads(ORDINARY), **changes})
