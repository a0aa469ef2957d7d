"""Where delivered values go: a private file (`--write`) or a child's environment (`run`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from envcat.cli.errors import CliError, CommandNotExecutable, CommandNotFound


def resolve_write_target(path: Path) -> Path:
    """Return the file `--write PATH` replaces, or raise ValueError saying why it cannot.

    A symlink is followed (the link stays, its target is replaced); a device, FIFO
    or directory is refused, and so is a path whose directory does not exist.
    """
    target = path.expanduser().absolute()
    if target.is_symlink():
        target = target.resolve()
    if not target.parent.is_dir():
        raise ValueError(f"the directory {target.parent} does not exist")
    if target.exists() and not target.is_file():
        raise ValueError(f"{target} exists and is not a regular file")
    return target


def write_private_file(path: Path, content: str) -> Path:
    """Write `content` to `path` atomically with mode 0600 and return the absolute path.

    The temporary file is created 0600 by `mkstemp` in the target's directory,
    so the data is never world-readable, even briefly, and `os.replace` swaps it
    in whole: a reader sees the old file or the new one, never half of one.
    """
    try:
        target = resolve_write_target(path)
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


def check_command(command: Sequence[str]) -> None:
    """Raise CommandNotFound before anything is requested if `command` cannot be run."""
    program = command[0]
    if shutil.which(program) is None:
        raise CommandNotFound(f"command not found: {program}")


def child_environment(values: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """Return `base` (normally os.environ) with the delivered values on top."""
    return {**base, **values}


def exec_command(command: Sequence[str], environment: Mapping[str, str]) -> NoReturn:
    """Replace this process with `command`; its exit code and signals become ours.

    Nothing is written to disk: the values live only in the new process's
    environment. Raises CommandNotFound (127) or CommandNotExecutable (126).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # the person's own command line, run without a shell, exactly as given
        os.execvpe(command[0], list(command), dict(environment))  # noqa: S606
    except FileNotFoundError:
        raise CommandNotFound(f"command not found: {command[0]}") from None
    except OSError as exc:
        raise CommandNotExecutable(f"cannot run {command[0]}: {exc.strerror or exc}") from None
