"""DELIVERY_SIGNING_KEY in operations: gen-keys, up's secrets.env, rotate-signing-key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from envcat.core.envelope import SigningKeyring, encode_key, fingerprint, generate_seed
from envcat.core.settings import Settings
from envcat.ops.commands import server
from envcat.ops.config import ensure_secrets, read_secrets
from envcat.ops.up import UpOptions, app_specs

VARIABLE = "DELIVERY_SIGNING_KEY"


def _fingerprint(seed: str) -> str:
    return fingerprint(SigningKeyring.from_setting(seed).public_keys[0])


def _rotate(path: Path, *extra: str):
    return CliRunner().invoke(server, ["rotate-signing-key", "--secrets-file", str(path), *extra])


def test_gen_keys_prints_a_signing_key_the_settings_accept() -> None:
    lines = CliRunner().invoke(server, ["gen-keys"]).stdout.splitlines()
    values = dict(line.split("=", 1) for line in lines)
    keyring = SigningKeyring.from_setting(values[VARIABLE])
    assert len(keyring.public_keys) == 1
    assert values["DELIVERY_PUBLIC_KEYS"] == encode_key(keyring.public_keys[0])


def test_an_older_secrets_file_gets_a_signing_key_and_keeps_its_values(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("BUNDLE_KMS_KEY=keep-me\nBFF_SHARED_SECRET=" + "a" * 64 + "\n")
    ensure_secrets(tmp_path)
    values = read_secrets(path)
    assert values["BUNDLE_KMS_KEY"] == "keep-me"
    assert values["BFF_SHARED_SECRET"] == "a" * 64
    assert SigningKeyring.from_setting(values[VARIABLE]).public_keys
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotation_prepends_a_new_key_then_drops_the_old_one(tmp_path: Path) -> None:
    old = generate_seed()
    path = tmp_path / "secrets.env"
    public = "DELIVERY_PUBLIC_KEYS=" + encode_key(SigningKeyring.from_setting(old).public_keys[0])
    path.write_text(f"# mine\nREDIS_PASSWORD=r\n{VARIABLE}={old}\n{public}\nLOG_LEVEL=DEBUG\n")
    path.chmod(0o600)

    rotated = _rotate(path)
    assert rotated.exit_code == 0, rotated.output
    seeds = read_secrets(path)[VARIABLE].split(",")
    assert len(seeds) == 2 and seeds[1] == old and seeds[0] != old
    assert rotated.stdout == _fingerprint(seeds[0]) + "\n"
    assert _fingerprint(old) in rotated.stderr
    assert "30 days" in rotated.stderr
    assert "rotate-signing-key --drop-old" in rotated.stderr
    text = path.read_text()
    assert text.startswith("# mine\nREDIS_PASSWORD=r\n") and text.endswith("LOG_LEVEL=DEBUG\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    both = SigningKeyring.from_setting(",".join(seeds)).public_keys
    expected_public = ",".join(encode_key(key) for key in both)
    assert read_secrets(path)["DELIVERY_PUBLIC_KEYS"] == expected_public
    assert f"DELIVERY_PUBLIC_KEYS={expected_public}" in rotated.stderr
    assert old not in rotated.output and seeds[0] not in rotated.output  # seeds never shown

    again = _rotate(path)
    assert again.exit_code == 1
    assert "rotation is already under way" in again.stderr
    assert read_secrets(path)[VARIABLE].split(",") == seeds

    dropped = _rotate(path, "--drop-old")
    assert dropped.exit_code == 0, dropped.output
    assert read_secrets(path)[VARIABLE] == seeds[0]
    assert dropped.stdout == _fingerprint(seeds[0]) + "\n"


def test_rotation_without_a_key_creates_one_and_a_missing_file_is_one_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secrets.env"
    missing = _rotate(path)
    assert missing.exit_code == 1
    assert missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    path.write_text("LOG_LEVEL=INFO")
    created = _rotate(path)
    assert created.exit_code == 0, created.output
    assert len(read_secrets(path)[VARIABLE].split(",")) == 1
    assert read_secrets(path)["LOG_LEVEL"] == "INFO"
    path.write_text(f"{VARIABLE}=not-a-seed\n")
    bad = _rotate(path)
    assert bad.exit_code == 1
    assert bad.stderr.startswith("envcat: configuration error: DELIVERY_SIGNING_KEY")


def test_only_the_worker_gets_the_seeds_and_the_api_the_public_keys(
    tmp_path: Path, settings: Settings
) -> None:
    seeds = settings.delivery_signing_key
    assert seeds is not None
    options = UpOptions("127.0.0.1", 15000, 18888, tmp_path, demo=False)
    specs = {spec.name: spec for spec in app_specs(options, tmp_path, settings)}
    assert specs["worker"].env[VARIABLE] == seeds.get_secret_value()
    for name in ("api", "beat", "bff"):
        assert VARIABLE not in specs[name].env
        assert seeds.get_secret_value() not in str(specs[name].env)
    keyring = SigningKeyring.from_setting(seeds.get_secret_value())
    public = ",".join(encode_key(key) for key in keyring.public_keys)
    assert specs["api"].env["DELIVERY_PUBLIC_KEYS"] == public


def test_only_the_bff_trusts_proxies(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "1")
    behind = settings.model_copy(update={"trusted_proxies": 1})
    options = UpOptions("127.0.0.1", 15000, 18888, tmp_path, demo=False)
    specs = {spec.name: spec for spec in app_specs(options, tmp_path, behind)}
    assert specs["bff"].env["TRUSTED_PROXIES"] == "1"
    assert "TRUSTED_PROXIES" not in specs["api"].env
