"""Supervised child processes for `envcat server up`.

Each child runs in its own session (so a Ctrl-C in the terminal reaches only
the supervisor, which then stops the children in order), its output is
prefixed with its name, and stopping is SIGTERM, a grace period, then SIGKILL
to whatever is left of its process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

import click

LABEL_WIDTH = 6
STOP_GRACE_SECONDS = 8.0
READER_JOIN_SECONDS = 2.0
_COLOURS = ("cyan", "green", "yellow", "magenta", "blue", "bright_red", "bright_green")
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the pre-exec hook must not load libraries in the child.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor itself is killed (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True)
class ProcessSpec:
    """What to run: a name for the output prefix, argv and the complete environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    # Backing services (redis) stop after everything that uses them.
    is_backing: bool = False


class Output:
    """Prefixed, coloured lines (`api    | …`) from several threads, never interleaved."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._colours: dict[str, str] = {}

    def line(self, name: str, text: str) -> None:
        """Write one line under `name`'s prefix (colour only on a terminal)."""
        colour = self._colours.setdefault(name, _COLOURS[len(self._colours) % len(_COLOURS)])
        prefix = click.style(f"{name:<{LABEL_WIDTH}} |", fg=colour)
        with self._lock:
            click.echo(f"{prefix} {text}")


@dataclass
class Child:
    """A started process and the thread copying its output."""

    spec: ProcessSpec
    process: subprocess.Popen[bytes]
    reader: threading.Thread

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None


@dataclass
class Supervisor:
    """Starts children, notices the first that dies, and stops them all."""

    output: Output
    children: list[Child] = field(default_factory=list)

    def start(self, spec: ProcessSpec) -> Child:
        """Start `spec` in a new session with its output piped through `output`."""
        process = subprocess.Popen(  # noqa: S603  # argv is built by envcat, never from input
            list(spec.argv),
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # preloaded prctl call only
        )
        assert process.stdout is not None  # noqa: S101  # stdout=PIPE guarantees it
        reader = threading.Thread(
            target=self._copy_output,
            args=(spec.name, process.stdout),
            name=f"envcat-{spec.name}-output",
            daemon=True,
        )
        reader.start()
        child = Child(spec, process, reader)
        self.children.append(child)
        self.output.line("envcat", f"started {spec.name} (pid {process.pid})")
        return child

    def _copy_output(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self.output.line(name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    def first_exited(self) -> Child | None:
        """The first child that is no longer running, if any."""
        return next((child for child in self.children if not child.is_running()), None)

    def stop_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop users of the backing services first, then the backing services."""
        self._stop([c for c in reversed(self.children) if not c.spec.is_backing], grace)
        self._stop([c for c in reversed(self.children) if c.spec.is_backing], grace)
        for child in self.children:
            child.reader.join(READER_JOIN_SECONDS)

    def _stop(self, children: Iterable[Child], grace: float) -> None:
        children = list(children)
        for child in children:
            if child.is_running():
                # The leader only: gunicorn and celery shut their own workers down gracefully.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for child in children:
            if child.is_running():
                self.output.line("envcat", f"{child.spec.name} ignored SIGTERM; killing it")
            # Anything left in the group (the leader, or a stray worker of it) is killed.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.process.wait()
