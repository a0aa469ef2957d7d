"""`envcat server backup-keygen`, `backup` and `restore` as an operator runs them."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import create_engine, func, inspect, select

from envcat.core.keys import new_kms_key
from envcat.core.settings import Settings
from envcat.models import AuditEvent, Key, db
from envcat.ops.commands import server
from envcat.services import audit, keys
from tests.support.cli_env import ENVCAT, clean_environment
from tests.support.signed import add_member

CANARY = "canary-cli-backup-value-77c2"
PASSPHRASE = "canary-backup-passphrase-0d4f"


def _invoke(args: list[str], env: dict[str, str], stdin: str | None = None) -> Result:
    return CliRunner().invoke(server, args, env=env, input=stdin)


@pytest.fixture
def populated(service_app: Flask) -> None:
    add_member("u-owner", "t-ops", "owner")
    key = keys.new_key("t-ops", "DATABASE_URL", CANARY, is_secret=True, description="")
    db.session.commit()
    for action in ("key.created", "bundle.exported", "request.approved"):
        audit.record("t-ops", "u-owner", action, f"key:{key.id}")
    db.session.remove()


def _keygen(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str]:
    path = tmp_path / "backup.key"
    result = _invoke(["backup-keygen", "--out", str(path)], env)
    assert result.exit_code == 0, result.output
    name, _, public = result.stdout.strip().partition("=")
    assert name == "BACKUP_PUBLIC_KEY"
    return path, public


def _target_env(
    server_env: dict[str, str], tmp_path: Path, name: str = "restored"
) -> dict[str, str]:
    return {**server_env, "DATABASE_URL": f"sqlite:///{tmp_path / f'{name}.db'}"}


def _tables(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_keygen_writes_a_private_file_and_never_overwrites(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    path, public = _keygen(tmp_path, server_env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public in path.read_text()  # named in the comment, so the pair is recognisable
    again = _invoke(["backup-keygen", "--out", str(path)], server_env)
    assert again.exit_code == 1
    assert "not overwriting" in again.stderr


@pytest.mark.usefixtures("populated")
def test_backup_needs_no_keyring_and_restore_verifies_everything(
    server_env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    key_file, public = _keygen(tmp_path, server_env)
    backup_env = {k: v for k, v in server_env.items() if k != "BUNDLE_KMS_KEY"}
    backup_env["BACKUP_PUBLIC_KEY"] = public
    out = tmp_path / "nightly.ecb"
    result = _invoke(["backup", "--out", str(out), "--data-dir", str(tmp_path)], backup_env)
    assert result.exit_code == 0, result.output
    assert "1 audit chain(s)" in result.stderr and "encrypted to backup key" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert CANARY.encode() not in out.read_bytes()

    target = _target_env(server_env, tmp_path)
    args = ["restore", str(out), "--identity", str(key_file), "--data-dir", str(tmp_path)]
    restored = _invoke(args, target)
    assert restored.exit_code == 0, restored.output
    assert "Audit log intact: 3 events in 1 tenant(s)." in restored.stderr
    engine = create_engine(target["DATABASE_URL"])
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == 3
        assert conn.execute(select(Key.name)).scalars().all() == ["DATABASE_URL"]
    engine.dispose()

    again = _invoke(args, target)
    assert again.exit_code == 1
    assert again.stderr.startswith("envcat: the target database is not empty")
    assert "Traceback" not in again.output


@pytest.mark.usefixtures("populated")
def test_refusals_are_one_line_and_write_nothing(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    no_key = _invoke(["backup", "--out", str(tmp_path / "x.ecb")], server_env)
    assert no_key.exit_code == 1
    assert "no backup key: set BACKUP_PUBLIC_KEY" in no_key.stderr
    assert not (tmp_path / "x.ecb").exists()

    key_file, public = _keygen(tmp_path, server_env)
    out = tmp_path / "b.ecb"
    assert _invoke(["backup", "--out", str(out), "--to", public], server_env).exit_code == 0

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_key, _ = _keygen(other_dir, server_env)
    target = _target_env(server_env, tmp_path)
    wrong = _invoke(["restore", str(out), "--identity", str(other_key)], target)
    assert wrong.exit_code == 1
    assert wrong.stderr.startswith("envcat: wrong key: this backup is sealed to backup key")
    assert len(wrong.stderr.splitlines()) == 1

    tampered = tmp_path / "t.ecb"
    data = bytearray(out.read_bytes())
    data[-5] ^= 0xFF
    tampered.write_bytes(bytes(data))
    bad = _invoke(["restore", str(tampered), "--identity", str(key_file)], target)
    assert bad.exit_code == 1
    assert bad.stderr == "envcat: the backup was altered (a frame fails authentication)\n"
    assert _tables(target["DATABASE_URL"]) == set()


@pytest.mark.usefixtures("populated")
def test_restore_with_another_keyring_says_the_values_will_not_decrypt(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    key_file, public = _keygen(tmp_path, server_env)
    out = tmp_path / "b.ecb"
    assert _invoke(["backup", "--out", str(out), "--to", public], server_env).exit_code == 0
    target = {**_target_env(server_env, tmp_path), "BUNDLE_KMS_KEY": new_kms_key()}
    result = _invoke(["restore", str(out), "--identity", str(key_file)], target)
    assert result.exit_code == 1
    assert "2 stored value(s) are encrypted under keys missing from BUNDLE_KMS_KEY" in (
        result.stderr
    )


@pytest.mark.usefixtures("populated")
def test_passphrase_backup_to_stdout_and_restore_as_real_processes(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = clean_environment(**server_env)
    backup = subprocess.run(
        [str(ENVCAT), "server", "backup", "--out", "-", "--passphrase-stdin"],
        input=(PASSPHRASE + "\n").encode(),
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert backup.returncode == 0, backup.stderr.decode()
    assert "encrypted to a passphrase (Argon2id)" in backup.stderr.decode()
    for secret in (CANARY, PASSPHRASE):
        assert secret.encode() not in backup.stdout + backup.stderr
    path = tmp_path / "piped.ecb"
    path.write_bytes(backup.stdout)

    target = clean_environment(**_target_env(server_env, tmp_path))
    restore = subprocess.run(
        [str(ENVCAT), "server", "restore", str(path), "--passphrase-stdin"],
        input=PASSPHRASE + "\n",
        env=target,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert restore.returncode == 0, restore.stderr
    assert "Audit log intact: 3 events in 1 tenant(s)." in restore.stderr
    assert CANARY not in restore.stdout + restore.stderr
    verify = subprocess.run(
        [str(ENVCAT), "server", "verify-audit"],
        env=target,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_a_failed_backup_leaves_no_file_and_no_traceback(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    _, public = _keygen(tmp_path, server_env)
    out = tmp_path / "never.ecb"
    unreachable = {
        **server_env,
        "DATABASE_URL": "postgresql+psycopg://nobody:canary-db-pw-41a@127.0.0.1:1/none",
    }
    result = _invoke(["backup", "--out", str(out), "--to", public], unreachable)
    assert result.exit_code == 1
    assert result.stderr.startswith("envcat: database error (OperationalError)")
    assert "canary-db-pw-41a" not in result.output and "Traceback" not in result.output
    no_schema = {**server_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = _invoke(["backup", "--out", str(out), "--to", public], no_schema)
    assert result.exit_code == 1
    assert "has no EnvCat schema" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.key", "empty.db"]


@pytest.mark.usefixtures("populated")
def test_signed_backups_and_restore_signed_by(server_env: dict[str, str], tmp_path: Path) -> None:
    keygen = _invoke(["backup-signing-keygen"], server_env)
    assert keygen.exit_code == 0, keygen.output
    name, _, seed = keygen.stdout.strip().partition("=")
    assert name == "BACKUP_SIGNING_KEY"
    public = keygen.stderr.split("--signed-by ")[1].strip()
    key_file, backup_public = _keygen(tmp_path, server_env)

    out = tmp_path / "signed.ecb"
    env = {**server_env, "BACKUP_PUBLIC_KEY": backup_public, "BACKUP_SIGNING_KEY": seed}
    result = _invoke(["backup", "--out", str(out)], env)
    assert result.exit_code == 0, result.output
    assert ", signed by " in result.stderr
    assert seed not in result.output

    unsigned = tmp_path / "unsigned.ecb"
    assert (
        _invoke(["backup", "--out", str(unsigned), "--to", backup_public], server_env).exit_code
        == 0
    )
    target = _target_env(server_env, tmp_path)
    args = ["--identity", str(key_file), "--signed-by", public]
    refused = _invoke(["restore", str(unsigned), *args], target)
    assert refused.exit_code == 1
    assert refused.stderr == (
        "envcat: the backup is not signed, and a signature was required (--signed-by)\n"
    )
    restored = _invoke(["restore", str(out), *args], target)
    assert restored.exit_code == 0, restored.output
    assert "Signature verified: signed by " in restored.stderr

    other = _target_env(server_env, tmp_path, "other")
    lenient = _invoke(["restore", str(unsigned), "--identity", str(key_file)], other)
    assert lenient.exit_code == 0
    assert "The backup is not signed: anyone who knows BACKUP_PUBLIC_KEY" in lenient.stderr


@pytest.mark.usefixtures("populated")
def test_verify_backup_needs_no_database_and_prints_the_manifest(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    key_file, public = _keygen(tmp_path, server_env)
    out = tmp_path / "nightly.ecb"
    assert _invoke(["backup", "--out", str(out), "--to", public], server_env).exit_code == 0
    # No settings at all: no DATABASE_URL, no keyring, nothing but the file and its key.
    result = _invoke(["verify-backup", str(out), "--identity", str(key_file)], {})
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["tables"]["audit_events"] == 3 and manifest["tables"]["keys"] == 1
    assert list(manifest["audit_heads"]) == ["t-ops"]
    assert result.stderr.splitlines()[-1].startswith("Backup intact: ")
    assert CANARY not in result.output

    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    out.write_bytes(bytes(data))
    bad = _invoke(["verify-backup", str(out), "--identity", str(key_file)], {})
    assert bad.exit_code == 1
    assert bad.stdout == ""
    assert bad.stderr == "envcat: the backup was altered (a frame fails authentication)\n"
