"""Claims found false by issue #23 do not come back in what users read.

Each phrase below once promised more than EnvCat does; the claims inventory in
docs/security.md lists what is true instead. Scanned: the bff's templates, the
README, every docs page and the help of every `envcat` command.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from envcat.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
# phrase (a regex, case-insensitive) → why it is false
RETIRED = {
    r"not even (this|the) server": "the worker decrypts the values to seal them",
    r"(server|it) can seal but (never|not) open": "the server reads what it seals",
    r"zero-trust": "the bff holds BFF_SHARED_SECRET and can sign for anyone",
    r"receive nothing": "a link holder reads the request's context",
    r"leaked `?\.env`? holds nothing": "a file written with --write holds the values",
    r"only this terminal can read them": "the server read them before sealing",
}
COMMANDS = [[], ["get"], ["run"], ["init"], ["trust"]]


def _user_facing_texts() -> dict[str, str]:
    texts = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    for path in sorted((ROOT / "docs").glob("*.md")):
        texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "envcat" / "bff" / "templates").glob("*.html")):
        texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    for command in COMMANDS:
        result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        texts[" ".join(["envcat", *command, "--help"])] = result.output
    return texts


def _found(texts: dict[str, str]) -> list[str]:
    return [
        f"{where}: {phrase!r} ({why})"
        for where, text in texts.items()
        for phrase, why in RETIRED.items()
        if re.search(phrase, " ".join(text.split()), re.IGNORECASE)
    ]


def test_no_retired_claim_is_shown_to_users() -> None:
    texts = _user_facing_texts()
    assert len(texts) > 20
    assert _found(texts) == []


@pytest.mark.parametrize(
    "text",
    [
        "nobody else can open them, not even this server.",
        "The server can seal but never\n  open, and the link alone",
        "The bff is zero-trust glue.",
    ],
)
def test_the_scan_catches_a_retired_claim_even_across_lines(text: str) -> None:
    assert _found({"page": text}) != []
