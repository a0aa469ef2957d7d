import subprocess
import sys

import pytest

from envcat.core.keys import new_kms_key, new_shared_secret
from envcat.core.settings import ConfigError, load_settings

GOOD_SECRET = new_shared_secret()


def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNDLE_KMS_KEY", new_kms_key())
    monkeypatch.setenv("BFF_SHARED_SECRET", GOOD_SECRET)
    monkeypatch.setenv("REQUEST_TTL", "120")
    settings = load_settings()
    assert settings.request_ttl == 120
    assert settings.broker_url == settings.redis_url
    assert GOOD_SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BFF_SHARED_SECRET": GOOD_SECRET}, "BUNDLE_KMS_KEY: Field required"),
        ({"BUNDLE_KMS_KEY": "not-base64!!", "BFF_SHARED_SECRET": GOOD_SECRET}, "BUNDLE_KMS_KEY:"),
        ({"BUNDLE_KMS_KEY": "c2hvcnQ=", "BFF_SHARED_SECRET": GOOD_SECRET}, "32 bytes"),
        ({"BUNDLE_KMS_KEY": new_kms_key(), "BFF_SHARED_SECRET": "abc"}, "BFF_SHARED_SECRET:"),
        ({"BUNDLE_KMS_KEY": new_kms_key(), "BFF_SHARED_SECRET": "z" * 64}, "hex"),
        ({"BUNDLE_KMS_KEY": new_kms_key()}, "BFF_SHARED_SECRET: Field required"),
    ],
)
def test_bad_required_secret_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    for value in env.values():
        if len(value) > 8:
            assert value not in message


def test_keyring_of_several_keys_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNDLE_KMS_KEY", f"{new_kms_key()}, {new_kms_key()}")
    monkeypatch.setenv("BFF_SHARED_SECRET", GOOD_SECRET)
    kms_key = load_settings().bundle_kms_key
    assert kms_key is not None and kms_key.get_secret_value().count(",") == 1


def test_clerk_provider_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNDLE_KMS_KEY", new_kms_key())
    monkeypatch.setenv("BFF_SHARED_SECRET", GOOD_SECRET)
    monkeypatch.setenv("AUTH_PROVIDER", "clerk")
    with pytest.raises(ConfigError, match="CLERK_JWT_KEY or CLERK_JWKS_URL"):
        load_settings()


def test_worker_start_up_with_missing_secret_is_one_line_no_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "BFF_SHARED_SECRET": GOOD_SECRET}
    result = subprocess.run(
        [sys.executable, "-c", "import envcat.workers.celery"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "envcat: configuration error: BUNDLE_KMS_KEY: Field required"


def test_bff_starts_without_the_kms_key_the_api_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BFF_SHARED_SECRET", GOOD_SECRET)
    settings = load_settings(needs_kms_key=False)
    assert settings.bundle_kms_key is None
    with pytest.raises(ConfigError, match="BUNDLE_KMS_KEY: Field required"):
        settings.kms_key_value()
