"""Redis connections from the settings: plain, TLS, or through Redis Sentinel (DESIGN §2).

One setting family reaches every Redis client of a process: the request store,
nonces and sessions (`connect`), the rate limiter (`limiter_storage`) and a Redis
Celery broker (`Settings.broker_url`, `broker_options`).

- **TLS**: a `rediss://` REDIS_URL (and a `rediss://` broker) verifies the server's
  certificate against REDIS_TLS_CA_FILE (else the system's CAs) and its host name,
  and presents REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE when the server asks
  (mutual TLS).
- **Sentinel**: REDIS_SENTINELS + REDIS_SENTINEL_MASTER make every client ask the
  sentinels for the current primary, and ask again after a failover; REDIS_URL then
  gives only the database number and the password.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from envcat.core.settings import Settings, url_database

# How long a sentinel may take to answer "who is the primary?".
SENTINEL_TIMEOUT_SECONDS = 1.0
TLS_SCHEME = "rediss"


def is_tls(url: str) -> bool:
    """True for a `rediss://` URL."""
    return urlsplit(url).scheme == TLS_SCHEME


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py keyword arguments for a verified TLS connection (CA, client certificate)."""
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_tls_cert_file and settings.redis_tls_key_file:
        options["ssl_certfile"] = settings.redis_tls_cert_file
        options["ssl_keyfile"] = settings.redis_tls_key_file
    return options


def _url_auth(url: str) -> dict[str, Any]:
    """Database number, user name and password that REDIS_URL names."""
    parts = urlsplit(url)
    auth: dict[str, Any] = {"db": url_database(url)}
    if parts.username:
        auth["username"] = unquote(parts.username)
    if parts.password:
        auth["password"] = unquote(parts.password)
    return auth


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A pooled client of the primary named by the settings; `options` go to redis-py."""
    if settings.sentinel_addresses:
        sentinel = Sentinel(
            settings.sentinel_addresses,
            socket_timeout=SENTINEL_TIMEOUT_SECONDS,
            socket_connect_timeout=SENTINEL_TIMEOUT_SECONDS,
        )
        master = settings.redis_sentinel_master
        assert master is not None  # noqa: S101  # settings require both
        client: redis.Redis = sentinel.master_for(
            master, redis_class=redis.Redis, **_url_auth(settings.redis_url), **options
        )
        return client
    if is_tls(settings.redis_url):
        options = {**options, **tls_options(settings)}
    return redis.Redis.from_url(settings.redis_url, **options)


def limiter_storage(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The flask-limiter storage URI and options for the same Redis."""
    if settings.sentinel_addresses:
        hosts = ",".join(f"{host}:{port}" for host, port in settings.sentinel_addresses)
        auth = _url_auth(settings.redis_url)
        options: dict[str, Any] = {
            "db": auth["db"],
            "use_replicas": False,  # counts are read where they are written
            "sentinel_kwargs": {"socket_timeout": SENTINEL_TIMEOUT_SECONDS},
        }
        options.update({k: auth[k] for k in ("username", "password") if k in auth})
        return f"redis+sentinel://{hosts}/{settings.redis_sentinel_master}", options
    if is_tls(settings.redis_url):
        return settings.redis_url, tls_options(settings)
    return settings.redis_url, {}


def broker_options(settings: Settings) -> dict[str, Any]:
    """Celery settings the broker URL needs: TLS options, the Sentinel master's name."""
    scheme = urlsplit(settings.broker_url.split(";", 1)[0]).scheme
    if scheme == "sentinel":
        transport = {
            "master_name": settings.redis_sentinel_master,
            "sentinel_kwargs": {"socket_timeout": SENTINEL_TIMEOUT_SECONDS},
        }
        return {"transport_options": transport}
    if scheme == TLS_SCHEME:
        options = tls_options(settings)
        use_ssl: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if key in options:
                use_ssl[key] = options[key]
        return {"broker_use_ssl": use_ssl}
    return {}
