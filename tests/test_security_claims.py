"""docs/security.md's claims are backed by tests that exist and run (issue #23).

The checker reads every Markdown table of the page. A table whose header has a
test column ("test", "tests", "shown by", "proven by") is a claim table: each of
its rows must name at least one test id (`tests/path.py::test_name`, optionally
`::Class::test_name` or a parametrised `[id]`). Every test id anywhere on the
page must be collected by pytest itself (a subprocess collecting only the
referenced files) and must not carry an unconditional skip. `…::test_name`
abbreviates the file of the id written before it. Every quoted claim of the
claims inventory must still appear in what users read (README, docs, templates,
`--help`, Python strings), so the inventory cannot drift from the wording.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import COLLECTED

ROOT = Path(__file__).resolve().parents[1]
SECURITY_MD = ROOT / "docs" / "security.md"
TEST_COLUMNS = {"test", "tests", "test(s)", "shown by", "proven by", "test id", "test ids"}
_ID = re.compile(
    r"(?P<file>tests/[\w./-]+\.py)?(?P<ellipsis>…|\.\.\.)?::(?P<name>[\w]+(?:::[\w]+)?)"
    r"(?P<param>\[[^\]`]*\])?"
)
_CODE = re.compile(r"`([^`]+)`")


def item_status(item: pytest.Item) -> str:
    """The test's status: skipped whatever the circumstances (skip, or skipif(True)) is
    "skip", expected to fail is "xfail", anything else "run"."""
    names = {
        m.name for m in item.iter_markers() if m.name != "skipif" or (m.args and m.args[0] is True)
    }
    return "skip" if {"skip", "skipif"} & names else "xfail" if "xfail" in names else "run"


# Run in a fresh interpreter: collects the given files and writes, per item, its node id
# and its status (item_status, whose source it carries).
_COLLECTOR = (
    "import json, sys\nimport pytest\n"
    + inspect.getsource(item_status)
    + """
class Report:
    def __init__(self):
        self.items = {}
    def pytest_collection_finish(self, session):
        self.items = {item.nodeid: item_status(item) for item in session.items}

report = Report()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[2:]],
                   plugins=[report])
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"code": int(code), "items": report.items}, out)
"""
)


@dataclass
class Row:
    """One row of a claim table: where it is and the test ids its test column names."""

    table: str
    line: int
    text: str
    ids: list[str] = field(default_factory=list)


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    # a `|` inside backticks (code) or escaped as \| does not split cells
    cells, current, in_code = [], "", False
    for index, char in enumerate(inner):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code and inner[index - 1 : index] != "\\":
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return cells


def _is_separator(line: str) -> bool:
    return all(re.fullmatch(r":?-{3,}:?", cell) for cell in _cells(line))


def find_test_ids(text: str, previous_file: str | None = None) -> tuple[list[str], list[str]]:
    """Return (ids, problems) for the test ids in `text`, in order, expanding `…::name`."""
    ids: list[str] = []
    problems: list[str] = []
    in_fence = False
    codes: list[str] = []
    for line in text.splitlines():  # line by line: a fenced block's ``` must not pair up
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            codes.extend(_CODE.findall(line))
    for code in codes:
        if not code.startswith(("tests/", "…::", "...::")):
            continue
        match = _ID.fullmatch(code.strip())
        if match is None or (match["file"] is None and match["ellipsis"] is None):
            problems.append(f"`{code}` is not a test id (tests/path.py::test_name)")
            continue
        file = match["file"] or previous_file
        if file is None:
            problems.append(f"`{code}` abbreviates a file but no test id comes before it")
            continue
        previous_file = file
        ids.append(f"{file}::{match['name']}{match['param'] or ''}")
    return ids, problems


def claim_rows(markdown: str) -> tuple[list[Row], list[str]]:
    """Every row of every table with a test column, and the malformed references met."""
    rows: list[Row] = []
    problems: list[str] = []
    lines = markdown.splitlines()
    heading = "(top)"
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        is_table = (
            line.lstrip().startswith("|")
            and index + 1 < len(lines)
            and lines[index + 1].lstrip().startswith("|")
            and _is_separator(lines[index + 1])
        )
        if not is_table:
            index += 1
            continue
        header = [cell.lower().strip("* ") for cell in _cells(line)]
        column = next((i for i, name in enumerate(header) if name in TEST_COLUMNS), None)
        index += 2
        while index < len(lines) and lines[index].lstrip().startswith("|"):
            if column is not None:
                cells = _cells(lines[index])
                cell = cells[column] if column < len(cells) else ""
                ids, bad = find_test_ids(cell)
                where = f"line {index + 1} ({heading})"
                problems.extend(f"{where}: {problem}" for problem in bad)
                rows.append(Row(heading, index + 1, cells[0] if cells else "", ids))
            index += 1
    return rows, problems


def collect(
    ids: list[str], root: Path, known: dict[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """{node id: skip, xfail or run} of the files of `ids` under `root`. `known` is what
    this pytest session collected from whole files; the files it lacks are collected by
    pytest in a fresh interpreter."""
    files = sorted({test_id.split("::", 1)[0] for test_id in ids})
    problems = [f"{file}: no such file" for file in files if not (root / file).is_file()]
    present = [file for file in files if (root / file).is_file()]
    known = known or {}
    in_session = {node.split("::", 1)[0] for node in known}
    items = {node: status for node, status in known.items() if node.split("::", 1)[0] in files}
    present = [file for file in present if file not in in_session]
    if not present:
        return items, problems
    handle, name = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    out = Path(name)
    try:
        run = subprocess.run(
            [sys.executable, "-c", _COLLECTOR, str(out), "--rootdir", str(root), *present],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        written = out.read_text(encoding="utf-8")
    finally:
        out.unlink(missing_ok=True)
    if not written:  # the collector itself died: say why instead of a JSON error
        tail = (run.stdout + run.stderr).strip().splitlines()[-5:]
        return {}, [*problems, f"pytest collection crashed: {' / '.join(tail)}"]
    report = json.loads(written)
    if report["code"] not in (0, 5):
        problems.append(f"pytest could not collect {' '.join(present)} (exit {report['code']})")
    return {**items, **report["items"]}, problems


def check_claims(
    markdown_path: Path, root: Path = ROOT, known: dict[str, str] | None = None
) -> list[str]:
    """Return every problem of the page's claim tables and test ids (empty: all proven)."""
    markdown = markdown_path.read_text(encoding="utf-8")
    rows, problems = claim_rows(markdown)
    problems += [
        f"line {row.line} ({row.table}): claim row has no test: {row.text[:80]!r}"
        for row in rows
        if not row.ids
    ]
    all_ids, bad = find_test_ids(markdown)
    problems += bad
    items, collect_problems = collect(all_ids, root, known)
    problems += collect_problems
    status: dict[str, set[str]] = {}
    for test_id in sorted(set(all_ids)):
        if not (root / test_id.split("::", 1)[0]).is_file():
            continue
        status[test_id] = {
            items[node]
            for node in items
            if node == test_id or ("[" not in test_id and node.startswith(test_id + "["))
        }
        if not status[test_id]:
            problems.append(f"{test_id}: no such test (pytest does not collect it)")
        elif status[test_id] == {"skip"}:
            problems.append(f"{test_id}: skipped unconditionally")
    problems += [
        f"line {row.line} ({row.table}): only expected failures show this claim"
        for row in rows
        if row.ids and all(status.get(test_id) == {"xfail"} for test_id in row.ids)
    ]
    return problems


def session_collected(config: pytest.Config) -> dict[str, str]:
    """{node id: status} of every test this session collected, before -k, -m or
    --deselect narrowed it; empty when a node id on the command line collected only part
    of a file (such a file's other tests would look missing)."""
    if any("::" in arg for arg in config.args):
        return {}
    return {item.nodeid: item_status(item) for item in config.stash.get(COLLECTED, [])}


def test_every_claim_in_security_md_names_tests_that_exist_and_run(
    request: pytest.FixtureRequest,
) -> None:
    rows, _ = claim_rows(SECURITY_MD.read_text(encoding="utf-8"))
    assert len(rows) >= 20, "the claim tables are missing"
    problems = check_claims(SECURITY_MD, known=session_collected(request.config))
    assert problems == [], "\n".join(problems)


BROKEN_PAGE = """\
# Claims

Prose may cite `tests/test_fake.py::test_fine` and `…::test_also_fine`.

| claim | where | tests |
|---|---|---|
| proven | README | `tests/test_fake.py::test_fine`, `…::test_param[one]` |
| `a|b` in code and a\\|b escaped stay one cell | docs | `tests/test_fake.py::test_param` |
| missing test | README | `tests/test_fake.py::test_not_there` |
| missing file | README | `tests/test_gone.py::test_anything` |
| skipped | landing | `tests/test_fake.py::test_skipped`, `…::test_skipped_if_true` |
| unproven | landing | none |
| wrong parameter | docs | `tests/test_fake.py::test_param[three]` |
| a known gap only | docs | `tests/test_fake.py::test_expected_to_fail` |
| malformed | docs | `tests/test_fake.py` |

| asset | protected by |
|---|---|
| a table without a test column | is not a claim table |
"""

FAKE_TESTS = """\
import pytest

def test_fine():
    pass

def test_also_fine():
    pass

@pytest.mark.parametrize("x", ["one", "two"])
def test_param(x):
    pass

@pytest.mark.skip(reason="never runs")
def test_skipped():
    pass

@pytest.mark.skipif(True, reason="never runs either")
def test_skipped_if_true():
    pass

@pytest.mark.xfail(strict=True, reason="a known gap")
def test_expected_to_fail():
    assert False
"""


def test_the_checker_fails_on_broken_references(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(FAKE_TESTS, encoding="utf-8")
    page = tmp_path / "security.md"
    page.write_text(BROKEN_PAGE, encoding="utf-8")

    problems = check_claims(page, root=tmp_path)

    assert sorted(problems) == sorted(
        [
            "tests/test_fake.py::test_not_there: no such test (pytest does not collect it)",
            "tests/test_gone.py: no such file",
            "tests/test_fake.py::test_skipped: skipped unconditionally",
            "tests/test_fake.py::test_skipped_if_true: skipped unconditionally",
            "tests/test_fake.py::test_param[three]: no such test (pytest does not collect it)",
            "line 15 (Claims): `tests/test_fake.py` is not a test id (tests/path.py::test_name)",
            "line 12 (Claims): claim row has no test: 'unproven'",
            "line 15 (Claims): claim row has no test: 'malformed'",
            "line 14 (Claims): only expected failures show this claim",
            "`tests/test_fake.py` is not a test id (tests/path.py::test_name)",
        ]
    )


def test_what_the_session_collected_answers_without_a_fresh_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statuses a full run's session already holds give the same answers."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(FAKE_TESTS, encoding="utf-8")
    page = tmp_path / "security.md"
    page.write_text(BROKEN_PAGE, encoding="utf-8")
    fake = "tests/test_fake.py::"
    known = {
        **{fake + name: "run" for name in ("test_fine", "test_also_fine")},
        **{fake + f"test_param[{x}]": "run" for x in ("one", "two")},
        fake + "test_skipped": "skip",
        fake + "test_skipped_if_true": "skip",
        fake + "test_expected_to_fail": "xfail",
    }
    fresh = check_claims(page, root=tmp_path)

    def no_interpreter(*args: object, **kwargs: object) -> None:
        raise AssertionError("collected again although the session knew the file")

    monkeypatch.setattr(subprocess, "run", no_interpreter)
    assert sorted(check_claims(page, root=tmp_path, known=known)) == sorted(fresh)


def test_the_checker_passes_a_page_whose_references_all_hold(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(FAKE_TESTS, encoding="utf-8")
    page = tmp_path / "security.md"
    page.write_text(BROKEN_PAGE.split("| missing test")[0], encoding="utf-8")

    assert check_claims(page, root=tmp_path) == []


def _shown_to_users() -> str:
    """Everything users read, flattened: README, docs, templates, --help, Python strings."""
    from click.testing import CliRunner

    from envcat.cli.main import cli

    parts = [(ROOT / "README.md").read_text(encoding="utf-8")]
    parts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    templates = sorted((ROOT / "envcat" / "bff" / "templates").glob("*.html"))
    parts += [re.sub(r"<[^>]+>|\{[{%#].*?[}%#]\}", " ", p.read_text()) for p in templates]
    parts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "envcat").rglob("*.py"))]
    for command in ([], ["get"], ["run"], ["init"], ["trust"]):
        parts.append(CliRunner().invoke(cli, [*command, "--help"], terminal_width=200).output)
    return _flat("\n".join(parts))


def _flat(text: str) -> str:
    return " ".join(text.replace("`", "").replace("*", "").split()).lower()


def test_every_quoted_claim_is_still_shown_to_users() -> None:
    """The inventory quotes users' words: a reworded source must update its row."""
    rows, _ = claim_rows(SECURITY_MD.read_text(encoding="utf-8"))
    shown = _shown_to_users()
    checked, missing = 0, []
    for row in rows:
        if row.table != "Claims inventory":
            continue
        for quote in re.findall(r'"([^"]+)"', row.text):
            for part in re.split(r"…|`<[^`]+>`", quote):
                if len(part.strip()) > 8:
                    checked += 1
                    if _flat(part) not in shown:
                        missing.append(f"line {row.line}: {part.strip()!r}")
    assert checked >= 30, "the inventory quotes too little to check"
    assert missing == [], "\n".join(missing)
    assert _flat("nobody else can open them, not even this server") not in shown
