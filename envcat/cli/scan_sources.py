"""What `envcat scan` reads (issue #19): the working tree, or every commit of a git repository.

Both yield `Chunk`s: lines of one file (at one commit, for history) with their line
numbers. The working tree respects .gitignore inside a repository; binaries and files
over MAX_FILE_BYTES are skipped. History reads `git log --all -p` once: every line any
commit on any ref added, so a value in a deleted file or on another branch is found
at the commit that added it. Everything runs `git` as a subprocess, never a shell.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 1024 * 1024
MAX_LINE_CHARS = 10_000  # minified bundles: past this a line is cut (scanned in part)
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_COMMIT_MARK = "\x00commit "
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})


class SourceError(Exception):
    """git is missing, PATH is not a repository, or git failed: the scan cannot run."""


@dataclass
class Chunk:
    """Numbered lines of one file, at `commit` (None: the working tree)."""

    path: str
    commit: str | None
    lines: list[tuple[int, str]] = field(default_factory=list)


def _argv(root: Path, *args: str) -> list[str]:
    return ["git", "-C", str(root), "-c", "core.quotepath=false", *args]


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(  # noqa: S603  # fixed argv, no shell
            _argv(root, *args),
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise SourceError("git is not installed (needed inside a repository)") from None


def is_repository(root: Path) -> bool:
    """True when `root` is inside a git work tree."""
    done = _git(root, "rev-parse", "--is-inside-work-tree")
    return done.returncode == 0 and done.stdout.strip() == b"true"


def _text_of(raw: bytes) -> str | None:
    if b"\x00" in raw[:8192]:
        return None  # binary
    return raw.decode("utf-8", errors="replace")


def _numbered(text: str) -> list[tuple[int, str]]:
    return [(n, line[:MAX_LINE_CHARS]) for n, line in enumerate(text.splitlines(), start=1)]


def _tree_paths(root: Path) -> Iterator[str]:
    if is_repository(root):
        done = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
        if done.returncode != 0:
            raise SourceError(f"git ls-files failed: {done.stderr.decode(errors='replace')[:200]}")
        yield from sorted({p for p in done.stdout.decode(errors="replace").split("\0") if p})
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            yield os.path.relpath(os.path.join(folder, name), root)


def working_tree(root: Path) -> Iterator[Chunk]:
    """Each text file under `root` (git-ignored, binary and big files skipped)."""
    for relative in _tree_paths(root):
        path = root / relative
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            continue
        text = _text_of(path.read_bytes())
        if text is not None:
            yield Chunk(relative, None, _numbered(text))


def git_history(root: Path) -> Iterator[Chunk]:
    """The lines each commit reachable from any ref added, per file and commit (streamed)."""
    if not is_repository(root):
        raise SourceError(f"{root} is not inside a git repository (--git-history)")
    args = ("log", "--all", "-p", "-U0", "--no-color", "--no-ext-diff", "--no-renames")
    argv = _argv(root, *args, "--format=%x00commit %H")
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors) as git:  # noqa: S603
            assert git.stdout is not None  # noqa: S101  # stdout=PIPE
            lines = (raw.decode("utf-8", errors="replace").rstrip("\n") for raw in git.stdout)
            yield from _parse_log(lines)
        if git.returncode != 0:
            errors.seek(0)
            message = errors.read(200).decode(errors="replace")
            raise SourceError(f"git log failed: {message}")


def _parse_log(lines: Iterable[str]) -> Iterator[Chunk]:
    commit: str | None = None
    chunk: Chunk | None = None
    in_header = False  # between `diff --git` and the first `@@`: `+++ b/path` names the file
    number = 0
    for line in lines:
        if line.startswith(_COMMIT_MARK):
            commit, in_header = line[len(_COMMIT_MARK) :].strip(), False
        elif line.startswith("diff --git "):
            if chunk is not None and chunk.lines:
                yield chunk
            chunk, in_header = None, True
        elif in_header and line.startswith("+++ "):
            target = line[4:]
            chunk = Chunk(target[2:], commit) if target.startswith("b/") else None
        elif (hunk := _HUNK.match(line)) is not None:
            number, in_header = int(hunk.group(1)), False
        elif chunk is not None and not in_header and line.startswith("+"):
            chunk.lines.append((number, line[1:][:MAX_LINE_CHARS]))
            number += 1
    if chunk is not None and chunk.lines:
        yield chunk
