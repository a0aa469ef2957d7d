"""The wire rules every layer shares (issue #13): one definition, checked here once."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from envcat.core import wire
from envcat.core.schemas.bundles import is_valid_key_name
from envcat.services.access_requests import store


def test_every_minted_request_id_fits_the_one_request_id_rule() -> None:
    for _ in range(200):
        minted = store.new_request(300).id
        assert wire.REQUEST_ID_RE.fullmatch(minted)
        assert wire.PATH_ID_RE.fullmatch(minted)  # the looser rule accepts whatever is minted


@pytest.mark.parametrize("request_id", ["a/b", "x?reveal=true", "x#y", "..", "%2e%2e", "a.b", ""])
def test_no_path_id_can_change_the_path(request_id: str) -> None:
    assert not wire.PATH_ID_RE.fullmatch(request_id)
    assert not wire.REQUEST_ID_RE.fullmatch(request_id)


@pytest.mark.parametrize(
    "forged",
    [
        "ok\r\nX-Injected: 1",  # a second header or a forged log line
        "\x1b[31mred",  # terminal escapes in whoever reads the logs
        "café-0123456789",  # printable, but not ASCII: refused everywhere now
        "x" * (wire.MAX_REQUEST_ID_LENGTH + 1),
        "",
        None,
        12345,
    ],
)
def test_a_forged_request_id_is_not_adopted(forged: object) -> None:
    assert wire.clean_request_id(forged) is None


def test_a_plain_request_id_is_adopted() -> None:
    assert wire.clean_request_id("trace-0123456789") == "trace-0123456789"


def test_the_api_replaces_a_non_ascii_request_id(api_client: FlaskClient) -> None:
    """The api and the bff adopt the same ids: a printable non-ASCII one is replaced."""
    reply = api_client.get("/api/v1/openapi.json", headers={wire.REQUEST_ID_HEADER: "café-01"})
    echoed = reply.headers[wire.REQUEST_ID_HEADER]
    assert echoed != "café-01" and wire.clean_request_id(echoed) == echoed
    kept = api_client.get("/api/v1/openapi.json", headers={wire.REQUEST_ID_HEADER: "trace-1"})
    assert kept.headers[wire.REQUEST_ID_HEADER] == "trace-1"


def test_error_body_is_the_one_shape() -> None:
    assert wire.error_body("not_found", "Not found.") == {
        "error": "not_found",
        "message": "Not found.",
    }
    assert wire.error_body("validation_error", "Bad.", [])["details"] == []
    assert wire.error_code("Method Not Allowed") == "method_not_allowed"


def test_the_cli_and_the_api_agree_on_key_names() -> None:
    from envcat.cli.formats import is_valid_name

    for name in ("API_KEY", "_x", "a1", "1a", "A-B", "A B", "É", ""):
        assert is_valid_name(name) == is_valid_key_name(name)
