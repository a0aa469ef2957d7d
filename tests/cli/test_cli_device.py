"""The device key (issue #17): made once, 0600, refused when others can read it."""

from __future__ import annotations

import multiprocessing
import os
import re
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from click.testing import CliRunner

from envcat.cli.device import describe_grant, device_key_path, load_or_create, public_fingerprint
from envcat.cli.errors import CliError
from envcat.cli.main import cli


def test_the_device_key_is_made_once_private_and_shown_as_eight_groups() -> None:
    first = CliRunner().invoke(cli, ["device"])
    assert first.exit_code == 0, first.output
    assert re.fullmatch(r"this device: (?:[0-9a-f]{4} ){7}[0-9a-f]{4}\n", first.stdout)
    path = device_key_path()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o077 == 0
    again = CliRunner().invoke(cli, ["device"])
    assert again.stdout == first.stdout  # the same key, not a new one


def test_a_key_file_others_can_read_or_a_symlink_is_refused(tmp_path: Path) -> None:
    CliRunner().invoke(cli, ["device"])
    path = device_key_path()
    path.chmod(0o644)
    result = CliRunner().invoke(cli, ["device"])
    assert result.exit_code == 1 and "readable by you alone" in result.stderr
    path.unlink()
    decoy = tmp_path / "decoy"
    decoy.write_text("x")
    decoy.chmod(0o600)
    path.symlink_to(decoy)
    result = CliRunner().invoke(cli, ["device"])
    assert result.exit_code == 1 and "regular file" in result.stderr


def test_a_grant_delivery_names_its_approver_and_time_left() -> None:
    marker = {"id": "g", "approved_by": "alice@acme.dev\x1b[2J", "expires_at": 10_800 + 100}
    shown = describe_grant(marker, now=100)
    assert shown.startswith("delivered under grant by alice@acme.dev")
    assert shown.endswith(", expires in 3 h") and "\x1b" not in shown  # no terminal controls
    assert describe_grant({**marker, "expires_at": 1300}, now=100).endswith("expires in 20 min")
    assert describe_grant({**marker, "expires_at": 99}, now=100).endswith(", now expired")


def _make_key_at_once(config_home: str, start: Barrier, fingerprints: Queue[str]) -> None:
    os.environ["XDG_CONFIG_HOME"] = config_home
    start.wait(timeout=30)
    try:
        fingerprints.put(public_fingerprint(load_or_create()))
    except CliError as exc:
        fingerprints.put(f"error: {exc.message}")


def test_envcats_started_at_once_on_a_new_machine_share_one_whole_key(tmp_path: Path) -> None:
    # Several `envcat get`s in one CI job's first second: each must read a whole key
    # (never another's half-written file) and all must end up with the same one.
    context = multiprocessing.get_context("fork")  # starts at once: the race is at the file
    processes = 6
    for round_ in range(8):
        home = tmp_path / f"round-{round_}"
        start, fingerprints = context.Barrier(processes), context.Queue()
        workers = [
            context.Process(target=_make_key_at_once, args=(str(home), start, fingerprints))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        seen = [fingerprints.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        assert len(set(seen)) == 1 and not seen[0].startswith("error"), seen
        key_dir = home / "envcat"
        assert [entry.name for entry in key_dir.iterdir()] == ["device_key"]  # no staged leftovers
        assert (key_dir / "device_key").stat().st_mode & 0o777 == 0o600


def test_a_file_system_without_hard_links_still_gets_a_whole_private_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_links(source: str, target: str) -> None:
        raise PermissionError(1, "Operation not permitted")  # what such a mount answers

    monkeypatch.setattr(os, "link", no_links)
    first = public_fingerprint(load_or_create())
    path = device_key_path()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [entry.name for entry in path.parent.iterdir()] == ["device_key"]
    assert public_fingerprint(load_or_create()) == first  # read back whole
