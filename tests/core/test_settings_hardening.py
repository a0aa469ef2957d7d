"""Settings added by issue #12: Clerk's default authorized party, proxies, metrics."""

from __future__ import annotations

import pytest

from envcat.core.keys import new_shared_secret
from envcat.core.settings import ConfigError, load_settings

CLERK = {"auth_provider": "clerk", "clerk_jwks_url": "https://clerk.example.test/jwks"}


def _load(**values: object):
    return load_settings(needs_kms_key=False, bff_shared_secret=new_shared_secret(), **values)


def test_clerk_authorized_parties_default_to_the_origin_of_public_url() -> None:
    settings = _load(public_url="https://envcat.example.com/some/path", **CLERK)
    assert settings.authorized_parties == ["https://envcat.example.com"]
    with_port = _load(public_url="http://localhost:8888", **CLERK)
    assert with_port.authorized_parties == ["http://localhost:8888"]
    listed = _load(clerk_authorized_parties="https://a.test, https://b.test", **CLERK)
    assert listed.authorized_parties == ["https://a.test", "https://b.test"]


def test_an_empty_authorized_parties_list_is_a_config_error_with_clerk() -> None:
    with pytest.raises(ConfigError) as raised:
        _load(clerk_authorized_parties=" , ", **CLERK)
    assert str(raised.value.code) == (
        "envcat: configuration error: configuration: "
        "AUTH_PROVIDER=clerk needs CLERK_AUTHORIZED_PARTIES (or unset it)"
    )
    assert _load(clerk_authorized_parties="").authorized_parties == []  # local: unused


def test_trusted_proxies_and_metrics_defaults() -> None:
    settings = _load()
    assert settings.trusted_proxies == 0
    assert settings.metrics_token is None
    assert settings.worker_metrics_host == "127.0.0.1"
    with pytest.raises(ConfigError) as raised:
        _load(trusted_proxies=-1)
    assert "TRUSTED_PROXIES" in str(raised.value.code)
    assert "s3cret-token" not in repr(_load(metrics_token="s3cret-token"))
