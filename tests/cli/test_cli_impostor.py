"""Attacks replayed with real processes: an impostor server on loopback (issue #11).

A real HTTP server in a thread speaks the request protocol and seals values to
the CLI's public key, as anyone who can answer on the server's address can.
The real `envcat` process must refuse it with exit 6, print nothing and run
nothing. The same server signing with the pinned key is accepted, so each
refusal is the signature's doing and not a broken fixture.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.cli_fakes import OTHER_SEED, SERVER_SEED, FakeApi, fingerprint_of, keyring, serve
from tests.support.cli_process import ENVCAT, clean_env

HOSTILE = {"DATABASE_URL": "postgres://attacker.example/db", "GREETING": "hello"}


@pytest.fixture
def server(api: FakeApi) -> Iterator[str]:
    api.values = dict(HOSTILE)
    with serve(api) as url:
        yield url


def pin_known(tmp_path: Path, server: str, seed: bytes = SERVER_SEED) -> Path:
    path = tmp_path / "config" / "envcat" / "known_servers"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{server} {fingerprint_of(seed)}\n")
    return path


def run_touch(server: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`envcat run … -- sh -c 'touch ran'` in tmp_path."""
    return subprocess.run(
        [*ENVCAT, "run", "--server", server, *extra, "--", "sh", "-c", "touch ran"],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )


def test_the_real_server_signing_with_the_pinned_key_runs(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    pin_known(tmp_path, server)
    result = run_touch(server, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ran").exists()
    assert "approved by alice@acme.dev in acme · production/api" in result.stderr


@pytest.mark.parametrize("pinned_in", ["known_servers", ".envcat.toml"])
def test_an_impostor_signing_with_its_own_key_is_refused(
    api: FakeApi, server: str, tmp_path: Path, pinned_in: str
) -> None:
    if pinned_in == "known_servers":
        known = pin_known(tmp_path, server)
        before = known.read_text()
    else:
        (tmp_path / ".envcat.toml").write_text(
            f'server = "{server}"\nserver_fingerprint = "{fingerprint_of(SERVER_SEED)}"\n'
        )
    api.impostor = keyring(OTHER_SEED)
    result = run_touch(server, tmp_path)
    assert result.returncode == 6, result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "ran").exists()
    assert "REFUSING the delivery: the server key changed" in result.stderr
    assert fingerprint_of(OTHER_SEED) in result.stderr
    assert "attacker" not in result.stderr
    if pinned_in == "known_servers":
        assert known.read_text() == before


def test_an_impostor_sealing_unsigned_values_is_refused_even_on_first_use(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    api.unsigned = True
    result = run_touch(server, tmp_path)
    assert result.returncode == 6, result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "ran").exists()
    assert "not a signed EnvCat envelope" in result.stderr
    assert not (tmp_path / "config" / "envcat" / "known_servers").exists()


def test_an_impostor_answering_for_another_workspace_is_refused(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    api.tamper = {"workspace_slug": "evil-corp"}
    result = run_touch(server, tmp_path)
    assert result.returncode == 6, result.stderr
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("shell", ["bash", "dash", "zsh"])
def test_eval_of_an_impostors_delivery_sets_nothing(
    api: FakeApi, server: str, tmp_path: Path, shell: str
) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here (CI installs it)")
    pin_known(tmp_path, server)
    api.impostor = keyring(OTHER_SEED)
    command = " ".join([*ENVCAT, "get", "--server", server])
    script = (
        f'out="$({command})"; code=$?; eval "$out"; '
        'printf "%s|" "$code" "${DATABASE_URL:-unset}" "$out"'
    )
    result = subprocess.run(
        [shell, "-c", script],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.stdout == "6|unset||"


def test_delivered_ld_preload_and_bash_env_are_refused_by_the_real_process(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    api.values = {"DATABASE_URL": "x", "LD_PRELOAD": "./evil.so", "BASH_ENV": "$(id > pwned)"}
    result = run_touch(server, tmp_path)
    assert result.returncode == 6, result.stderr
    assert "LD_PRELOAD, BASH_ENV" in result.stderr
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "pwned").exists()


def _tool(directory: Path, marker: str) -> None:
    directory.mkdir()
    script = directory / "envcat-test-tool"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_run_resolves_the_program_with_the_callers_path_not_the_delivered_one(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    good, evil = tmp_path / "good-bin", tmp_path / "evil-bin"
    _tool(good, "good-ran")
    _tool(evil, "evil-ran")
    api.values = {"PATH": f"{evil}:/usr/bin:/bin"}  # allowed by name, still never used to look up
    result = subprocess.run(
        [*ENVCAT, "run", "--server", server, "--allow-var", "PATH", "--", "envcat-test-tool"],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path, PATH=f"{good}:/usr/bin:/bin:{Path(sys.executable).parent}"),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "good-ran").exists()
    assert not (tmp_path / "evil-ran").exists()


def test_a_symlinked_env_file_is_refused_and_its_target_untouched(
    api: FakeApi, server: str, tmp_path: Path
) -> None:
    bashrc = tmp_path / "bashrc"
    bashrc.write_text("# my shell\n")
    (tmp_path / ".env").symlink_to(bashrc)  # as a hostile repository ships it
    result = subprocess.run(
        [*ENVCAT, "get", "--server", server, "--write", ".env"],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "is a symbolic link; refusing to write through it" in result.stderr
    assert bashrc.read_text() == "# my shell\n"
    assert api.calls == []
