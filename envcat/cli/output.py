"""Where delivered values go: a private file (`--write`) or a child's environment (`run`)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from envcat.cli.errors import CliError, CommandNotExecutable, CommandNotFound


def resolve_write_target(path: Path) -> Path:
    """Return the file `--write PATH` replaces, or raise ValueError saying why it cannot.

    A symlink is refused, never followed (a repository shipping `.env -> ~/.bashrc`
    must not get the values written over the link's target); so is a device,
    FIFO or directory, and a path whose directory does not exist.
    """
    target = path.expanduser().absolute()
    try:
        info = target.lstat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise ValueError(f"{target} is a symbolic link; refusing to write through it")
    if not target.parent.is_dir():
        raise ValueError(f"the directory {target.parent} does not exist")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{target} exists and is not a regular file")
    return target


def _check_regular_without_following(target: Path) -> None:
    """Open the existing target with O_NOFOLLOW and check it is a regular file."""
    # O_NONBLOCK: opening a FIFO must not hang; POSIX only (Windows relies on the lstat check)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(target, flags)
    except (FileNotFoundError, PermissionError):
        return  # gone, or unreadable to us: the lstat check stands, and rename replaces the entry
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{target} is a symbolic link; refusing to write through it") from None
        raise ValueError(exc.strerror or str(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError(f"{target} exists and is not a regular file")
    finally:
        os.close(descriptor)


def write_private_file(path: Path, content: str) -> Path:
    """Write `content` to `path` atomically with mode 0600 and return the absolute path.

    The temporary file is created 0600 by `mkstemp` (O_EXCL, so never through a
    link) in the target's directory, so the data is never world-readable, even
    briefly; `os.replace` then swaps the directory entry itself: a symlink put
    there in the meantime is replaced, its target never written. A reader sees
    the old file or the new one, never half of one.
    """
    try:
        target = resolve_write_target(path)
        _check_regular_without_following(target)
    except ValueError as exc:
        raise CliError(f"cannot write {path}: {exc}") from None
    directory = target.parent
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content.encode("utf-8"))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    _sync_directory(directory)
    return target


def _sync_directory(directory: Path) -> None:
    # make the rename itself durable; not every filesystem allows fsync on a directory
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def caller_path(environment: Mapping[str, str] | None = None) -> str:
    """Return the caller's own PATH (never a delivered one)."""
    env = os.environ if environment is None else environment
    return env.get("PATH", os.defpath)


def check_command(command: Sequence[str], search_path: str | None = None) -> str:
    """Return the absolute program `command` runs, resolved with the caller's PATH.

    Raises CommandNotFound before anything is requested. Resolving here, and
    exec-ing the absolute path later, means a delivered PATH can never choose
    which program runs.
    """
    program = command[0]
    found = shutil.which(program, path=caller_path() if search_path is None else search_path)
    if found is None:
        raise CommandNotFound(f"command not found: {program}")
    return os.path.abspath(found)


def child_environment(values: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """Return `base` (normally os.environ) with the delivered values on top."""
    return {**base, **values}


def exec_command(program: str, command: Sequence[str], environment: Mapping[str, str]) -> NoReturn:
    """Replace this process with `program` (absolute), argv `command`; its exit code is ours.

    Nothing is written to disk: the values live only in the new process's
    environment. Raises CommandNotFound (127) or CommandNotExecutable (126).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # the person's own command, resolved with their own PATH, run without a shell
        os.execve(program, list(command), dict(environment))  # noqa: S606
    except FileNotFoundError:
        raise CommandNotFound(f"command not found: {command[0]}") from None
    except OSError as exc:
        raise CommandNotExecutable(f"cannot run {command[0]}: {exc.strerror or exc}") from None
