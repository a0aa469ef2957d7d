"""Reply parsing at the edge: hostile or odd server answers become clear errors."""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

import httpx
import pytest

from envcat.cli.errors import CliError
from envcat.cli.protocol import create_request, retry_after_seconds

GOOD = {
    "id": "abcDEF_123-x",
    "poll_token": "p",
    "user_code": "WDJB-MJHT",
    "verification_uri": "http://envcat.test/approve",
    "verification_uri_complete": "http://envcat.test/approve/abcDEF_123-x",
    "interval": 5,
    "expires_in": 300,
}


def create_with_reply(reply: dict[str, Any]) -> Any:
    transport = httpx.MockTransport(lambda request: httpx.Response(201, json=reply))
    with httpx.Client(transport=transport, base_url="http://envcat.test") as client:
        return create_request(client, {"client_pubkey": "x"})


def test_a_good_reply_is_parsed() -> None:
    created = create_with_reply(GOOD)
    assert (created.id, created.interval, created.expires_in) == ("abcDEF_123-x", 5.0, 300.0)


@pytest.mark.parametrize(("interval", "used"), [(0, 1.0), (-5, 1.0), (3600, 60.0), (2.5, 2.5)])
def test_interval_is_kept_within_sane_bounds(interval: float, used: float) -> None:
    assert create_with_reply({**GOOD, "interval": interval}).interval == used


def test_missing_interval_defaults_to_five_seconds() -> None:
    reply = {k: v for k, v in GOOD.items() if k != "interval"}
    assert create_with_reply(reply).interval == 5.0


@pytest.mark.parametrize("request_id", ["../../admin", "a/b", "a b", "", "é"])
def test_request_ids_that_are_not_url_safe_are_refused(request_id: str) -> None:
    with pytest.raises(CliError, match="not URL-safe"):
        create_with_reply({**GOOD, "id": request_id})


@pytest.mark.parametrize("field", ["expires_in", "interval"])
@pytest.mark.parametrize("value", ["300", None, True, [1]])
def test_non_numeric_timing_is_refused(field: str, value: object) -> None:
    with pytest.raises(CliError, match="malformed"):
        create_with_reply({**GOOD, field: value})


def retry_after(value: str | None) -> float | None:
    headers = {} if value is None else {"Retry-After": value}
    return retry_after_seconds(httpx.Response(429, headers=headers))


def test_retry_after_in_seconds_and_as_a_date() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("-3") == 0.0
    assert retry_after(None) is None
    assert retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after(later) or 0) <= 31


def test_a_redirect_says_which_server_to_use() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(301, headers={"Location": "https://envcat.test/"})
    )
    expected = re.escape("redirecting to https://envcat.test/; pass that address as --server")
    with (
        httpx.Client(transport=transport, base_url="http://envcat.test") as client,
        pytest.raises(CliError, match=expected),
    ):
        create_request(client, {"client_pubkey": "x"})


def test_validation_details_are_shown_with_the_message() -> None:
    reply = {
        "error": "validation_error",
        "message": "Request is invalid.",
        "details": [{"loc": ["bundle"], "msg": "must be 1-200 characters", "type": "value_error"}],
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(400, json=reply))
    expected = "HTTP 400 (validation_error): Request is invalid. (bundle: must be 1-200 characters)"
    with (
        httpx.Client(transport=transport, base_url="http://envcat.test") as client,
        pytest.raises(CliError, match=re.escape(expected)),
    ):
        create_request(client, {"client_pubkey": "x"})


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ({"approvals": 1, "approvals_required": 2}, "1 of 2 approvals"),
        ({}, ""),
        ({"approvals": 1, "approvals_required": 1}, ""),  # nothing to wait for: nothing shown
        ({"approvals": 3, "approvals_required": 2}, ""),  # nonsense from a server is dropped
        ({"approvals": True, "approvals_required": 2}, ""),
        ({"approvals": "1", "approvals_required": 2}, ""),
    ],
)
def test_a_pending_k_of_n_request_shows_its_count(sent: dict[str, Any], shown: str) -> None:
    from envcat.cli.protocol import Pending, _read_status

    outcome = _read_status({"status": "pending", **sent})
    assert isinstance(outcome, Pending) and outcome.progress() == shown
