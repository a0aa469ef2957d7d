"""The CLI run as a real subprocess: its argv and a clean environment with a private HOME."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from tests.cli.cli_fakes import (
    WORKSPACE,
)

ENVCAT = [sys.executable, "-m", "envcat.cli.main"]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVCAT_", "XDG_"))}
    return {
        **env,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "ENVCAT_WORKSPACE": WORKSPACE,
        **extra,
    }


def assert_waited(process: subprocess.Popen[str]) -> None:
    """A `envcat get --timeout N` that nobody approved: it waited, gave up (exit 3), printed
    nothing on stdout, and no grant delivered it."""
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert out == "" and "under grant" not in err


def run_envcat(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `envcat <args>` to the end as a real process; its output captured as text."""
    return subprocess.run(
        [*ENVCAT, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


APPROVAL_URL = re.compile(r"/approve/([A-Za-z0-9_-]+)")


class WatchedCli:
    """A real `envcat` subprocess whose stderr is read as it comes (the link, the phrase);
    stdout stays in its pipe for the caller."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], *, cwd: Path | None = None, wait: float
    ) -> None:
        self.wait = wait
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.put(raw.decode("utf-8", "replace"))

    def request_id(self) -> str:
        """The id in the approval link the CLI printed."""
        while True:
            line = self.lines.get(timeout=self.wait)
            self.seen.append(line)
            if found := APPROVAL_URL.search(line):
                return found.group(1)

    def exit_code(self) -> int:
        """Wait for the exit and for the last stderr line to be read."""
        code = self.process.wait(timeout=self.wait)
        self._reader.join(timeout=self.wait)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code

    def stderr(self) -> str:
        return "".join(self.seen)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
