"""Properties across the two formatters: what one side writes, the other reads back.

Complements the single-side properties already in the suite (the server's dotenv
serialiser in tests/services/test_dotenv_io.py; the CLI's sh/fish/dotenv output
through bash, fish and python-dotenv in tests/cli/test_cli_shells.py) with:

- the CLI's `--format dotenv`/`json` output imported by the server's importer
  (`envcat get --write .env` then "Import .env" on another server);
- any mapping through the real api: import, export, re-import changes nothing;
- the importer on arbitrary text: a result or a 400, never a crash, and its
  errors never quote a value;
- the CLI's `sh` output through dash and zsh (bash is covered already).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject
from hypothesis import settings as examples
from hypothesis import strategies as st

from envcat.cli.formats import FormatError, render
from envcat.core.schemas.bundles import is_valid_key_name
from envcat.services import dotenv_io
from envcat.services.errors import ValidationFailed
from tests.support.signed import SignedClient

# Characters that broke other tools' quoting, mixed into arbitrary Unicode text.
NASTY = [*"\"'\\$`#= \t\n\r{}!*?;&|<>()~", "${A}", "$(id)", "\\n", "\r\n", "export "]
CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")
VALUES = st.lists(st.one_of(CHARACTERS, st.sampled_from(NASTY)), max_size=40).map("".join)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,16}", fullmatch=True)
MAPPINGS = st.dictionaries(NAMES, VALUES, max_size=6)
CANARY = "canary-7f3a9c1e"
QUICK = examples(max_examples=100, deadline=None)
PROCESSES = examples(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _render_or_refuse(values: dict[str, str], fmt: str) -> str:
    try:
        return render(values, fmt)
    except FormatError:
        # The CLI refuses ${…} in dotenv (python-dotenv would expand it); nothing else.
        assert fmt == "dotenv" and any("${" in value for value in values.values())
        reject()


@QUICK
@given(values=MAPPINGS)
def test_cli_dotenv_output_imports_into_the_server_unchanged(values: dict[str, str]) -> None:
    text = _render_or_refuse(values, "dotenv")
    parsed = dotenv_io.parse("dotenv", text)
    assert parsed.values == values
    assert parsed.skipped == []


@QUICK
@given(values=MAPPINGS)
def test_cli_json_output_imports_into_the_server_unchanged(values: dict[str, str]) -> None:
    parsed = dotenv_io.parse("json", render(values, "json"))
    assert parsed.values == values
    assert list(parsed.values) == list(values)


@QUICK
@given(values=MAPPINGS)
def test_server_exports_parse_back_in_both_formats(values: dict[str, str]) -> None:
    for fmt, text in (
        ("dotenv", dotenv_io.serialise_dotenv(values)),
        ("json", dotenv_io.serialise_json(values)),
    ):
        assert dotenv_io.parse(fmt, text).values == values, fmt
    assert json.loads(dotenv_io.serialise_json(values)) == values


@QUICK
@given(content=st.lists(st.one_of(VALUES, st.sampled_from(["=", "\n", "A=", '"', "'"]))))
def test_the_dotenv_importer_answers_any_text_with_values_or_a_400(content: list[str]) -> None:
    text = "".join(content)
    try:
        parsed = dotenv_io.parse("dotenv", text)
    except ValidationFailed:
        return
    for name, value in parsed.values.items():
        assert is_valid_key_name(name)
        assert isinstance(value, str) and "\x00" not in value


@QUICK
@given(content=st.one_of(st.text(), st.recursive(st.none() | st.text(), st.lists).map(json.dumps)))
def test_the_json_importer_answers_any_text_with_values_or_a_400(content: str) -> None:
    try:
        parsed = dotenv_io.parse("json", content)
    except ValidationFailed:
        return
    assert all(isinstance(value, str) for value in parsed.values.values())


@QUICK
@given(
    good=st.dictionaries(NAMES, VALUES, max_size=3),
    bad=st.sampled_from(["\x00", "x" * (64 * 1024 + 1)]),
    fmt=st.sampled_from(["dotenv", "json"]),
)
def test_a_refused_import_never_quotes_a_value(good: dict[str, str], bad: str, fmt: str) -> None:
    values = {name: f"{CANARY}{value}" for name, value in good.items()}
    values["BAD_VALUE"] = CANARY + bad
    text = json.dumps(values) if fmt == "json" else dotenv_io.serialise_dotenv(values)
    with pytest.raises(ValidationFailed) as refused:
        dotenv_io.parse(fmt, text)
    assert "BAD_VALUE" in refused.value.message
    assert CANARY not in refused.value.message + json.dumps(refused.value.details)


# --- through the real api -------------------------------------------------------

_tenants = itertools.count()


def _import(owner: SignedClient, bundle_id: str, fmt: str, content: str) -> dict[str, Any]:
    body = {"format": fmt, "content": content, "overwrite": False}
    reply = owner.post(f"/api/v1/bundles/{bundle_id}/import", body)
    assert reply.status_code == 200, reply.get_json()
    result: dict[str, Any] = reply.get_json()
    return result


@PROCESSES
@given(values=st.dictionaries(NAMES, VALUES, min_size=1, max_size=6))
def test_any_mapping_survives_import_export_and_reimport(
    signed_as: Any, values: dict[str, str]
) -> None:
    n = next(_tenants)
    owner: SignedClient = signed_as(f"u-prop-{n}", f"t-prop-{n}")  # a fresh library each time
    bundle_id = owner.post("/api/v1/bundles", {"name": "prop/bundle"}).get_json()["id"]
    assert _import(owner, bundle_id, "json", json.dumps(values))["created"] == list(values)

    exported = owner.get(f"/api/v1/bundles/{bundle_id}/export?format=dotenv")
    assert exported.status_code == 200
    assert dotenv_io.parse("dotenv", exported.get_data(as_text=True)).values == values
    again = _import(owner, bundle_id, "dotenv", exported.get_data(as_text=True))
    assert again == {"created": [], "updated": [], "unchanged": list(values), "skipped": []}
    as_json = owner.get(f"/api/v1/bundles/{bundle_id}/export?format=json").get_json()
    assert as_json == values


# --- the CLI's sh output through the other POSIX shells ---------------------------

SHELLS = {"dash": ["dash", "-c"], "zsh": ["zsh", "-f", "-c"]}
SHELL_NAMES = NAMES.map(lambda name: f"t_{name}")  # never IFS, PATH or another special one


@pytest.mark.parametrize("shell", list(SHELLS))
@PROCESSES
@given(values=st.dictionaries(SHELL_NAMES, VALUES, max_size=5))
def test_any_mapping_round_trips_through_posix_shells(shell: str, values: dict[str, str]) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    printed = "".join(f"printf '%s\\0' \"${name}\"\n" for name in values)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "out.sh"
        path.write_bytes(render(values, "sh").encode("utf-8"))
        done = subprocess.run(
            [*SHELLS[shell], f'eval "$(cat "$1")"\n{printed}', "_", str(path)],
            capture_output=True,
            env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"},
            cwd=directory,
            timeout=30,
            check=False,
        )
        assert list(Path(directory).iterdir()) == [path]  # no command substitution ran
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    fields = done.stdout.split(b"\0")[: len(values)]
    assert fields == [value.encode("utf-8") for value in values.values()]
