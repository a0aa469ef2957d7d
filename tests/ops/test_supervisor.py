"""The `up` supervisor: prefixed output, the first child to die, and a stop that leaves nothing."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from envcat.ops.supervisor import Output, ProcessSpec, Supervisor

# A child that ignores SIGTERM and leaves a grandchild (which also ignores it) in its group.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
print("grandchild", grandchild.pid, flush=True)
time.sleep(120)
"""


def _spec(name: str, code: str, *, is_backing: bool = False) -> ProcessSpec:
    return ProcessSpec(name, [sys.executable, "-c", code], dict(os.environ), is_backing)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_output_is_prefixed_per_child(capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor(Output())
    child = supervisor.start(_spec("api", "print('hello'); print('world', flush=True)"))
    child.process.wait(timeout=20)
    supervisor.stop_all(grace=1)
    lines = capsys.readouterr().out.splitlines()
    assert f"envcat | started api (pid {child.pid})" in lines
    assert "api    | hello" in lines
    assert "api    | world" in lines
    assert not any("\x1b[" in line for line in lines)  # no colour codes when not a terminal


def test_first_exited_names_the_child_that_died() -> None:
    supervisor = Supervisor(Output())
    sleeper = supervisor.start(_spec("api", "import time; time.sleep(60)"))
    dying = supervisor.start(_spec("worker", "raise SystemExit(3)"))
    try:
        _wait_for(lambda: supervisor.first_exited() is not None)
        assert supervisor.first_exited() is dying
        assert dying.process.returncode == 3
        assert sleeper.is_running()
    finally:
        supervisor.stop_all(grace=1)
    assert not _alive(sleeper.pid)


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except FileNotFoundError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_stop_kills_what_ignores_sigterm_and_its_strays(capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor(Output())
    child = supervisor.start(_spec("stubborn", STUBBORN))
    _wait_for(lambda: bool(_children_of(child.pid)))
    grandchildren = _children_of(child.pid)
    started = time.monotonic()
    supervisor.stop_all(grace=0.5)
    assert time.monotonic() - started < 10
    assert not child.is_running()
    _wait_for(lambda: not any(_alive(pid) for pid in grandchildren))
    assert "envcat | stubborn ignored SIGTERM; killing it" in capsys.readouterr().out


def _stops_at(name: str, delay: float) -> str:
    return (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        f"    time.sleep({delay})\n"
        f"    print('{name} stopped at', time.monotonic(), flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )


def test_backing_services_stop_after_their_users(capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor(Output())
    supervisor.start(_spec("redis", _stops_at("backing", 0), is_backing=True))
    supervisor.start(_spec("api", _stops_at("user", 0.5)))
    seen: list[str] = []

    def both_ready() -> bool:
        seen.append(capsys.readouterr().out)
        return "".join(seen).count("| ready") == 2

    _wait_for(both_ready)
    supervisor.stop_all(grace=5)
    lines = ("".join(seen) + capsys.readouterr().out).splitlines()
    stopped = {line.split()[2]: float(line.split()[-1]) for line in lines if "stopped at" in line}
    assert stopped["user"] < stopped["backing"]
    assert [child.process.returncode for child in supervisor.children] == [0, 0]
