""".env parsing (python-dotenv's own parser) and the serialiser, with nasty values."""

from __future__ import annotations

import io
import json

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from envcat.services import dotenv_io
from envcat.services.errors import ValidationFailed
from tests.support.values import NASTY


def _read_back(text: str, interpolate: bool = False) -> dict[str, str | None]:
    return dotenv_values(stream=io.StringIO(text), interpolate=interpolate)


def test_serialised_nasty_values_read_back_exactly() -> None:
    text = dotenv_io.serialise_dotenv(NASTY)
    assert _read_back(text) == NASTY
    assert dotenv_io.parse("dotenv", text).values == NASTY
    # One physical line per key: the file stays diff- and grep-friendly.
    assert len(text.splitlines()) >= len(NASTY)
    assert text.count("\n") == len(NASTY)


def test_values_without_braces_survive_interpolating_readers_too() -> None:
    values = {k: v for k, v in NASTY.items() if "${" not in v}
    assert _read_back(dotenv_io.serialise_dotenv(values), interpolate=True) == values


def test_serialiser_uses_only_four_escapes() -> None:
    assert dotenv_io.quote('a\\b"c\nd\re\tf$g#h') == '"a\\\\b\\"c\\nd\\re\tf$g#h"'
    assert dotenv_io.serialise_dotenv({"A": "", "B": "x"}) == 'A=""\nB="x"\n'


_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=80
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True), _TEXT))
def test_round_trip_property(values: dict[str, str]) -> None:
    text = dotenv_io.serialise_dotenv(values)
    assert _read_back(text) == values
    assert dotenv_io.parse("dotenv", text).values == values


def test_parser_follows_python_dotenv_semantics() -> None:
    content = (
        "# a comment\n"
        "\n"
        "export EXPORTED=yes\n"
        "PLAIN=value with spaces   # trailing comment\n"
        "HASH_NO_SPACE=a#b\n"
        "EMPTY=\n"
        "EMPTY_COMMENT= # only a comment\n"
        "SINGLE='literal $HOME \\n'\n"
        'DOUBLE="tab\\there\\nnext"\n'
        'MULTI="first\n'
        'second"\n'
        "BRACED=${HOME}\n"
        "  INDENTED = spaced  \n"
        "DUP=first\n"
        "DUP=second\n"
    )
    parsed = dotenv_io.parse("dotenv", content)
    assert parsed.values == {
        "EXPORTED": "yes",
        "PLAIN": "value with spaces",
        "HASH_NO_SPACE": "a#b",
        "EMPTY": "",
        "EMPTY_COMMENT": "",
        "SINGLE": "literal $HOME \\n",
        "DOUBLE": "tab\there\nnext",
        "MULTI": "first\nsecond",
        "BRACED": "${HOME}",
        "INDENTED": "spaced",
        "DUP": "second",
    }
    assert parsed.skipped == []


def test_invalid_names_and_bare_names_are_skipped() -> None:
    parsed = dotenv_io.parse(
        "dotenv", "GOOD=1\nbad.name=2\n9START=3\n'quoted key'=4\nNO_VALUE\nDASH-ED=5\n"
    )
    assert parsed.values == {"GOOD": "1"}
    assert parsed.skipped == ["bad.name", "9START", "quoted key", "NO_VALUE", "DASH-ED"]


def test_unparseable_lines_fail_with_line_numbers_only() -> None:
    with pytest.raises(ValidationFailed) as caught:
        dotenv_io.parse("dotenv", 'OK=1\nBROKEN="secret-fragment\nALSO=2\n')
    assert "line 2" in caught.value.message
    assert "secret-fragment" not in caught.value.message + repr(caught.value.details)


def test_json_import_rules() -> None:
    parsed = dotenv_io.parse("json", json.dumps({"A": "1", "bad name": "2", "B": ""}))
    assert parsed.values == {"A": "1", "B": ""}
    assert parsed.skipped == ["bad name"]
    # An invalid name is skipped whatever its value; a valid one needs a string.
    assert dotenv_io.parse("json", '{"bad name": 5}').skipped == ["bad name"]


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '"string"',
        "null",
        '{"A": 1}',
        '{"A": null}',
        '{"A": ["x"]}',
        '{"A": {"nested": "x"}}',
        '{"A": true}',
        '{"A": "ok", "B": 2}',
        '{"A": "\\u0000"}',
        '{"A": "\\ud800"}',
        "[" * 100_000,
        '{"A": "' + "x" * (64 * 1024 + 1) + '"}',
    ],
)
def test_bad_json_content_fails_whole(content: str) -> None:
    with pytest.raises(ValidationFailed):
        dotenv_io.parse("json", content)


def test_too_long_dotenv_value_fails_whole_naming_the_key() -> None:
    with pytest.raises(ValidationFailed) as caught:
        dotenv_io.parse("dotenv", "A=1\nLONG=" + "x" * (64 * 1024 + 1) + "\n")
    assert "LONG" in caught.value.message


def test_too_many_keys_is_refused() -> None:
    content = "".join(f"K{i}=v\n" for i in range(dotenv_io.MAX_IMPORT_KEYS + 1))
    with pytest.raises(ValidationFailed):
        dotenv_io.parse("dotenv", content)


def test_json_serialiser_round_trips() -> None:
    text = dotenv_io.serialise_json(NASTY)
    assert json.loads(text) == NASTY
    assert list(json.loads(text)) == list(NASTY)
    assert dotenv_io.parse("json", text).values == NASTY
