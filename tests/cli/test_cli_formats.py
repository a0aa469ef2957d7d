"""The formatters against a golden corpus, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envcat.cli.formats import FORMATS, FormatError, quote_dotenv, render, validate_values
from envcat.cli.options import FORMAT_CHOICES

GOLDEN = Path(__file__).with_name("golden")
CORPUS: dict[str, str] = json.loads((GOLDEN / "corpus.json").read_text(encoding="utf-8"))
EXTENSIONS = {"sh": "sh", "fish": "fish", "dotenv": "env", "json": "json", "docker": "docker"}
# values no parser of that format can carry unchanged: refused, never mangled
REFUSED = {
    "dotenv": {"DOLLAR_BRACED", "DOLLAR_DEFAULT"},
    "docker": {"NEWLINE", "TRAILING_NEWLINE", "CRLF"},
}


def accepted(fmt: str) -> dict[str, str]:
    refused = REFUSED.get(fmt, set())
    return {name: value for name, value in CORPUS.items() if name not in refused}


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_matches_the_golden_file(fmt: str) -> None:
    expected = (GOLDEN / f"corpus.{EXTENSIONS[fmt]}").read_bytes()
    assert render(accepted(fmt), fmt).encode("utf-8") == expected


@pytest.mark.parametrize(
    ("fmt", "name"), [(f, n) for f, names in REFUSED.items() for n in sorted(names)]
)
def test_unrepresentable_values_are_refused_naming_only_the_key(fmt: str, name: str) -> None:
    with pytest.raises(FormatError) as caught:
        render({name: CORPUS[name]}, fmt)
    assert name in str(caught.value)
    assert CORPUS[name] not in str(caught.value)


def test_cli_offers_exactly_the_engine_formats() -> None:
    # plus `github`, which writes $GITHUB_ENV and prints only masks (envcat.cli.github, #16)
    assert (*FORMATS, "github") == FORMAT_CHOICES


def test_output_keeps_the_order_received() -> None:
    values = {"Z": "1", "A": "2", "M": "3"}
    assert [line.split("=")[0] for line in render(values, "docker").splitlines()] == ["Z", "A", "M"]
    assert list(json.loads(render(values, "json"))) == ["Z", "A", "M"]


def test_empty_mapping_renders_empty_output() -> None:
    assert render({}, "sh") == ""
    assert render({}, "json") == "{}\n"


@pytest.mark.parametrize(
    "name", ["", "1A", "A-B", "A B", "A=B", "A;B", "$A", "É", "A\n", "-n", "A.B", "٣"]
)
def test_invalid_names_are_refused_in_every_format(name: str) -> None:
    for fmt in FORMATS:
        with pytest.raises(FormatError, match="not a valid variable name"):
            render({"OK": "1", name: "v"}, fmt)


@pytest.mark.parametrize("name", ["A", "_", "_A1", "a_b", "PATH2", "x" * 200])
def test_valid_names_are_accepted(name: str) -> None:
    validate_values({name: "v"})


def test_nul_and_lone_surrogates_are_refused() -> None:
    with pytest.raises(FormatError, match="NUL"):
        validate_values({"A": "a\x00b"})
    with pytest.raises(FormatError, match="not valid Unicode"):
        validate_values({"A": "\ud800"})


def test_dotenv_single_quotes_dollar_values_only_when_safe() -> None:
    assert quote_dotenv("A", "$HOME") == "'$HOME'"
    assert quote_dotenv("A", "$HOME's") == '"$HOME\'s"'
    assert quote_dotenv("A", "a\\$b") == '"a\\\\$b"'
    assert quote_dotenv("A", "no dollar") == '"no dollar"'


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render({"A": "1"}, "yaml")
