"""rotate-kms: batches enqueued on the real broker, run by a real worker, progress to 0."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from envcat.core.keys import new_kms_key
from envcat.core.kms import Keyring
from envcat.core.settings import Settings
from envcat.models import Key, Tenant, db
from envcat.ops.commands import server
from envcat.services import rotation
from tests.support.settings import make_settings

OLD_KEY = new_kms_key()
NEW_KEY = new_kms_key()
CANARY = "canary-rotation-value-{}"


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, broker_url: str) -> Settings:
    """The keyring after a rotation began: the new key first, the old one still known."""
    return make_settings(sqlite_url, redis_url, broker_url, bundle_kms_key=f"{NEW_KEY},{OLD_KEY}")


def _seed_under_old_key(count: int) -> dict[str, str]:
    old = Keyring.from_setting(OLD_KEY)
    db.session.add(Tenant(id="ten_rot", name="rot", kind="personal"))
    db.session.flush()
    plain: dict[str, str] = {}
    for number in range(count):
        key = Key(id=f"key-{number:03d}", tenant_id="ten_rot", name=f"K{number}", value="")
        key.value = old.encrypt(CANARY.format(number), tenant_id="ten_rot", key_id=key.id)
        db.session.add(key)
        plain[key.id] = CANARY.format(number)
    db.session.commit()
    return plain


def _rotate(server_env: dict[str, str], tmp_path: Path, *extra: str):
    args = ["rotate-kms", "--data-dir", str(tmp_path), *extra]
    return CliRunner().invoke(server, args, env=server_env)


def test_rotation_reaches_zero_with_a_real_worker(
    service_app: Flask, celery_worker: object, server_env: dict[str, str], tmp_path: Path
) -> None:
    plain = _seed_under_old_key(7)
    assert rotation.count_outdated() == 7
    result = _rotate(server_env, tmp_path, "--batch-size", "3")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "rotate-kms: enqueued 3 batch(es) for 7 values under an old key"
    assert any(line.endswith("(0 left)") for line in lines)
    assert lines[-1] == "rotate-kms: done: every value is under the primary key"
    db.session.expire_all()
    assert rotation.count_outdated() == 0
    new = Keyring.from_setting(NEW_KEY)
    for key in db.session.query(Key):
        assert key.value.startswith(f"v1.{new.primary_id}.")
        assert new.decrypt(key.value, tenant_id="ten_rot", key_id=key.id) == plain[key.id]
    assert "canary-rotation" not in result.output


def test_nothing_to_rotate_enqueues_nothing(
    service_app: Flask, server_env: dict[str, str], tmp_path: Path
) -> None:
    result = _rotate(server_env, tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stderr == "rotate-kms: every value is already under the primary key\n"


def test_no_wait_returns_once_enqueued(
    service_app: Flask, celery_worker: object, server_env: dict[str, str], tmp_path: Path
) -> None:
    _seed_under_old_key(2)
    result = _rotate(server_env, tmp_path, "--no-wait")
    assert result.exit_code == 0, result.output
    assert result.stderr == "rotate-kms: enqueued 1 batch(es) for 2 values under an old key\n"
    # A second run sees what is still outdated and finishes the job.
    again = _rotate(server_env, tmp_path)
    assert again.exit_code == 0, again.output
    db.session.expire_all()
    assert rotation.count_outdated() == 0


def test_unreachable_broker_is_one_line(
    service_app: Flask, server_env: dict[str, str], tmp_path: Path
) -> None:
    _seed_under_old_key(1)
    env = {**server_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    result = _rotate(env, tmp_path)
    assert result.exit_code == 1
    assert result.stderr == "envcat: the Celery broker is unreachable (CELERY_BROKER_URL)\n"
