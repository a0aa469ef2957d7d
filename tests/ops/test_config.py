"""gen-keys, DATA_DIR/secrets.env and how server commands read their configuration."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from envcat.core.keys import new_kms_key, new_shared_secret
from envcat.core.settings import Settings
from envcat.ops.commands import server
from envcat.ops.config import (
    OpsError,
    ensure_data_dir,
    ensure_secrets,
    load_server_settings,
    read_secrets,
    settings_environment,
    sqlite_url,
)
from tests.support import free_port
from tests.support.cli_env import ENVCAT, clean_environment


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_gen_keys_prints_settings_that_load() -> None:
    result = CliRunner().invoke(server, ["gen-keys"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    values = dict(line.split("=", 1) for line in lines)
    assert sorted(values) == [
        "BFF_SHARED_SECRET",
        "BUNDLE_KMS_KEY",
        "DELIVERY_PUBLIC_KEYS",
        "DELIVERY_SIGNING_KEY",
        "REDIS_BFF_PASSWORD",
        "REDIS_PASSWORD",
    ]
    assert len(values["REDIS_PASSWORD"]) == 64
    assert len(values["REDIS_BFF_PASSWORD"]) == 64
    assert values["REDIS_PASSWORD"] != values["REDIS_BFF_PASSWORD"]
    settings = Settings(**{name.lower(): value for name, value in values.items()})  # type: ignore[arg-type]  # strings, as the environment gives them; pydantic parses
    assert settings.bff_shared_secret.get_secret_value() == values["BFF_SHARED_SECRET"]
    assert result.stderr == ""


def test_gen_keys_is_fresh_each_time() -> None:
    first = CliRunner().invoke(server, ["gen-keys"]).stdout
    second = CliRunner().invoke(server, ["gen-keys"]).stdout
    assert first != second


def test_secrets_file_is_created_private_and_reused(tmp_path: Path) -> None:
    data_dir = ensure_data_dir(tmp_path / "data")
    assert _mode(data_dir) == 0o700
    path = ensure_secrets(data_dir)
    assert _mode(path) == 0o600
    first = read_secrets(path)
    assert set(first) == {
        "BUNDLE_KMS_KEY",
        "BFF_SHARED_SECRET",
        "DELIVERY_SIGNING_KEY",
        "REDIS_PASSWORD",
    }
    ensure_secrets(data_dir)
    assert read_secrets(path) == first
    assert not list(data_dir.glob(".*.tmp"))


def test_secrets_file_gets_missing_values_and_loses_loose_mode(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    kept = new_kms_key()
    path.write_text(f"BUNDLE_KMS_KEY={kept}\n")
    path.chmod(0o644)
    ensure_secrets(tmp_path)
    values = read_secrets(path)
    assert values["BUNDLE_KMS_KEY"] == kept
    assert len(values["BFF_SHARED_SECRET"]) == 64
    assert _mode(path) == 0o600
    path.chmod(0o644)
    ensure_secrets(tmp_path)
    assert _mode(path) == 0o600


def test_secrets_file_fills_only_what_the_environment_does_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_secrets(tmp_path)
    from_file = read_secrets(tmp_path / "secrets.env")
    mine = new_shared_secret()
    monkeypatch.setenv("BFF_SHARED_SECRET", mine)
    settings = load_server_settings(tmp_path)
    assert settings.bff_shared_secret.get_secret_value() == mine
    assert _secret(settings.bundle_kms_key) == from_file["BUNDLE_KMS_KEY"]
    assert settings.database_url == sqlite_url(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    assert load_server_settings(tmp_path).database_url == "sqlite:///elsewhere.db"


@pytest.mark.parametrize("missing", ["BUNDLE_KMS_KEY", "BFF_SHARED_SECRET"])
def test_missing_secret_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    present = {"BUNDLE_KMS_KEY": new_kms_key(), "BFF_SHARED_SECRET": new_shared_secret()}
    del present[missing]
    for name, value in present.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(OpsError) as raised:
        load_server_settings(tmp_path / "nothing-here")
    assert raised.value.message == f"envcat: configuration error: {missing}: Field required"


def test_settings_round_trip_through_the_environment(settings: Settings) -> None:
    env = settings_environment(settings)
    assert env["BUNDLE_KMS_KEY"] == _secret(settings.bundle_kms_key)
    assert env["ALLOW_SIGNUP"] == "true"
    assert "CLERK_JWT_KEY" not in env
    rebuilt = Settings(**{name.lower(): value for name, value in env.items()})  # type: ignore[arg-type]  # strings, as the environment gives them
    assert rebuilt == settings


BAD_VALUES = [
    ("BFF_SHARED_SECRET", "too-short", "BFF_SHARED_SECRET: must be at least 64 hex characters"),
    ("BUNDLE_KMS_KEY", "bm90LTMyLWJ5dGVz", "BUNDLE_KMS_KEY: each key must decode to 32 bytes"),
    ("REQUEST_TTL", "5", "REQUEST_TTL: Input should be greater than or equal to 30"),
    ("AUTH_PROVIDER", "ldap", "AUTH_PROVIDER: Input should be 'local' or 'clerk'"),
]


def _environment_with(variable: str, value: str) -> dict[str, str]:
    good = {"BUNDLE_KMS_KEY": new_kms_key(), "BFF_SHARED_SECRET": new_shared_secret()}
    return {**good, variable: value}


@pytest.mark.parametrize(("variable", "value", "expected"), BAD_VALUES)
@pytest.mark.parametrize("command", ["init-db", "verify-audit", "rotate-kms", "up"])
def test_bad_configuration_stops_every_command_with_one_line(
    tmp_path: Path, command: str, variable: str, value: str, expected: str
) -> None:
    env = _environment_with(variable, value)
    # Free ports: the check must not depend on what else listens on 5000 or 8888.
    ports = ["--api-port", str(free_port()), "--bff-port", str(free_port())]
    args = [command, "--data-dir", str(tmp_path), *(ports if command == "up" else [])]
    result = CliRunner().invoke(server, args, env=env)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"envcat: configuration error: {expected}\n"


@pytest.mark.parametrize("command", ["init-db", "up"])
def test_bad_configuration_in_a_real_process_prints_no_traceback(
    tmp_path: Path, command: str
) -> None:
    variable, value, expected = BAD_VALUES[0]
    ports = ["--api-port", str(free_port()), "--bff-port", str(free_port())]
    started = time.monotonic()
    result = subprocess.run(
        [str(ENVCAT), "server", command, "--data-dir", str(tmp_path)]
        + (ports if command == "up" else []),
        env=clean_environment(**_environment_with(variable, value)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"envcat: configuration error: {expected}\n"
    assert not (tmp_path / "envcat.db").exists()


def _secret(value: SecretStr | None) -> str:
    assert value is not None
    return value.get_secret_value()
