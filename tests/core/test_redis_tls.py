"""Redis over TLS (`rediss://`): the store, nonces, rate limits and the Celery broker.

Against a real redis-server listening only on a TLS port, with a CA and
certificates made for each run (tests/support/redis_tls.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from envcat.core.keys import new_shared_secret
from envcat.core.redisconn import broker_options, limiter_storage
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import ConfigError, Settings, load_settings
from envcat.services.runtime import make_redis
from envcat.workers.factory import create_celery
from tests.support.envelopes import open_delivery
from tests.support.redis_tls import TlsRedis, new_authority, tls_redis
from tests.support.settings import make_settings
from tests.support.stack import live_stack

VALUES = {"OVER_TLS": "sealed and encrypted twice"}


def _tls_overrides(server: TlsRedis, *, client_cert: bool) -> dict[str, Any]:
    values: dict[str, Any] = {"redis_tls_ca_file": str(server.ca_file)}
    if client_cert:
        values |= {
            "redis_tls_cert_file": str(server.client_cert),
            "redis_tls_key_file": str(server.client_key),
        }
    return values


def _settings(sqlite_url: str, server: TlsRedis, *, client_cert: bool) -> Settings:
    return make_settings(
        sqlite_url,
        f"{server.url}/0",
        f"{server.url}/1",
        **_tls_overrides(server, client_cert=client_cert),
    )


@pytest.mark.slow
def test_an_approval_runs_end_to_end_over_mutual_tls(sqlite_url: str, tmp_path: Path) -> None:
    with (
        tls_redis(tmp_path / "redis", require_client_cert=True) as server,
        live_stack(
            sqlite_url,
            f"{server.url}/0",
            f"{server.url}/1",
            **_tls_overrides(server, client_cert=True),
        ) as stack,
    ):
        assert stack.settings.broker_url.startswith("rediss://")
        account = stack.sign_up("tls@example.test", "correct horse battery staple")  # nonces
        with (
            stack.signed(account["user"]["id"], account["tenant"]["id"]) as owner,
            stack.browser() as cli,
        ):
            assert owner.get("/readyz").status_code == 200  # database, Redis and broker
            assert cli.get("/readyz").status_code == 200  # the bff: the api and its Redis
            bundle_id = owner.post("/api/v1/bundles", json={"name": "tls/api"}).json()["id"]
            for name, value in VALUES.items():
                added = owner.post(
                    f"/api/v1/bundles/{bundle_id}/keys", json={"name": name, "value": value}
                )
                assert added.status_code == 201
            private_key = generate_keypair()
            created = cli.post(  # through the bff and the api's rate limiter
                "/api/v1/requests",
                json={
                    "client_pubkey": encode_public_key(private_key),
                    "workspace": account["tenant"]["slug"],
                },
            )
            assert created.status_code == 201, created.text
            approved = owner.post(
                f"/api/v1/requests/{created.json()['id']}/encrypt-from-bundle",
                json={"bundle_id": bundle_id, "include_keys": list(VALUES)},
            )
            assert approved.status_code == 202  # enqueued on the TLS broker
            waited = cli.get(
                f"/api/v1/requests/{created.json()['id']}/wait",
                params={"timeout": 20},
                headers={"X-Poll-Token": created.json()["poll_token"]},
            )
        assert waited.status_code == 200, waited.text
        assert open_delivery(private_key, waited.json()["ciphertext_base64"]) == VALUES
        # The server speaks only TLS: a plain client gets nowhere.
        plain = redis.Redis(port=server.port, socket_timeout=2, socket_connect_timeout=2)
        with pytest.raises(redis.exceptions.ConnectionError):
            plain.ping()
        plain.close()


def test_a_redis_with_a_certificate_from_another_ca_is_refused(
    sqlite_url: str, tmp_path: Path
) -> None:
    trusted = new_authority("the-ca-we-trust").write(tmp_path / "trusted-ca.crt")
    with tls_redis(tmp_path / "impostor", authority=new_authority("impostor-ca")) as impostor:
        settings = make_settings(
            sqlite_url,
            f"{impostor.url}/0",
            f"{impostor.url}/1",
            redis_tls_ca_file=str(trusted),
        )
        client = make_redis(settings)
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
            client.ping()
        client.close()
        celery = create_celery(settings)
        with celery.connection_for_write() as connection, pytest.raises(Exception) as refused:
            connection.ensure_connection(max_retries=1)
        assert "certificate" in str(refused.value).lower()


def test_a_server_that_requires_a_client_certificate_refuses_a_client_without_one(
    sqlite_url: str, tmp_path: Path
) -> None:
    with tls_redis(tmp_path / "redis", require_client_cert=True) as server:
        without = make_redis(_settings(sqlite_url, server, client_cert=False))
        with pytest.raises(redis.exceptions.ConnectionError):
            without.ping()
        without.close()
        with_cert = make_redis(_settings(sqlite_url, server, client_cert=True))
        assert with_cert.ping()
        with_cert.close()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"REDIS_TLS_CA_FILE": "{ca}"}, "REDIS_TLS_* needs a rediss:// REDIS_URL"),
        ({"REDIS_URL": "rediss://r:6380/0", "REDIS_TLS_CA_FILE": "/nonexistent"}, "no such file"),
        (
            {"REDIS_URL": "rediss://r:6380/0", "REDIS_TLS_CERT_FILE": "{ca}"},
            "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together",
        ),
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together"),
        (
            {"REDIS_SENTINELS": "s1:26379,s2", "REDIS_SENTINEL_MASTER": "m"},
            "must be host:port pairs",
        ),
        (
            {
                "REDIS_URL": "rediss://r:6380/0",
                "REDIS_SENTINELS": "s1:26379",
                "REDIS_SENTINEL_MASTER": "m",
            },
            "Sentinel with TLS is not supported",
        ),
    ],
)
def test_redis_settings_that_would_not_do_what_they_say_stop_start_up(
    variables: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = new_authority("ca").write(tmp_path / "ca.crt")
    monkeypatch.setenv("BFF_SHARED_SECRET", new_shared_secret())
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(ca=ca))
    with pytest.raises(ConfigError) as stopped:
        load_settings(needs_kms_key=False)
    assert message in str(stopped.value)
    assert "\n" not in str(stopped.value)


def test_under_sentinel_the_broker_is_kombus_sentinel_list_with_the_urls_password(
    sqlite_url: str,
) -> None:
    settings = make_settings(
        sqlite_url,
        "redis://:p%40ss@ignored:6379/3",
        None,
        redis_sentinels="10.0.0.1:26379, 10.0.0.2:26380",
        redis_sentinel_master="envcat",
    )
    assert settings.broker_url == (
        "sentinel://:p%40ss@10.0.0.1:26379/3;sentinel://:p%40ss@10.0.0.2:26380/3"
    )
    assert broker_options(settings) == {
        "transport_options": {"master_name": "envcat", "sentinel_kwargs": {"socket_timeout": 1.0}}
    }
    uri, options = limiter_storage(settings)
    assert uri == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/envcat"
    assert (options["db"], options["password"], options["use_replicas"]) == (3, "p@ss", False)
    explicit = settings.model_copy(update={"celery_broker_url": "amqp://rabbit//"})
    assert explicit.broker_url == "amqp://rabbit//"  # an explicit broker wins
    assert broker_options(explicit) == {}
