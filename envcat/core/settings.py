"""The one configuration object (DESIGN §2), read from environment variables.

Build it once per entry point with `load_settings()` and pass it down; nothing
else reads `os.environ`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from envcat.core.envelope import EnvelopeError, SigningKeyring, decode_key

KMS_KEY_BYTES = 32
MIN_SHARED_SECRET_HEX = 64
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class ConfigError(SystemExit):
    """Start-up stops with one line naming the variable; never a traceback."""


class Settings(BaseSettings):
    """Every knob of an EnvCat server process; names match DESIGN §2 case-insensitively."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    database_url: str = "sqlite:///./.envcat/envcat.db"
    """SQLAlchemy URL of the database: SQLite for one machine, `postgresql+psycopg://…` to scale."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for pending requests, nonces, rate limits and wake-ups (run it without persistence)."""
    celery_broker_url: str | None = None
    """Celery broker (Redis or RabbitMQ); defaults to REDIS_URL."""
    bundle_kms_key: SecretStr | None = None
    """Keyring for values at rest: comma-separated urlsafe-base64 32-byte keys, first = primary.
    Required by the api, the workers and `envcat server`; the public bff never holds it."""
    bff_shared_secret: SecretStr
    """HMAC key the bff signs api calls with: at least 64 hex characters, same on bff and api."""
    delivery_signing_key: SecretStr | None = None
    """Ed25519 seeds the workers sign deliveries with: comma-separated urlsafe base64, first =
    primary, the rest still sign during a rotation's grace period. Workers only."""
    delivery_public_keys: str | None = None
    """Public halves of DELIVERY_SIGNING_KEY (urlsafe base64, comma-separated, primary first),
    served at /api/v1/server-key; derived from DELIVERY_SIGNING_KEY when that is set."""
    max_pending_per_ip: int = Field(default=20, ge=1)
    """Pending requests one client IP may hold at once; more are refused with 429."""
    session_secret: SecretStr | None = None
    """Key of the bff's session cookie; derived from BFF_SHARED_SECRET when unset."""
    request_ttl: int = Field(default=300, ge=30, le=3600)
    """Seconds an access request lives before it expires."""
    request_rate_limit: str = "60/minute"
    """Request creation limit per client IP, in flask-limiter syntax."""
    public_url: str = "http://localhost:8888"
    """Public base URL of the web UI; approval links start with it."""
    api_base_url: str = "http://127.0.0.1:5000"
    """Where the bff reaches the internal api."""
    auth_provider: Literal["local", "clerk"] = "local"
    """Who signs people in: built-in accounts (`local`) or Clerk (`clerk`)."""
    clerk_jwt_key: SecretStr | None = None
    """Clerk's PEM public key, to verify session tokens without a network call."""
    clerk_jwks_url: str | None = None
    """Clerk's JWKS URL, used when CLERK_JWT_KEY is not set."""
    clerk_issuer: str | None = None
    """Expected `iss` of Clerk session tokens."""
    clerk_authorized_parties: str | None = None
    """Allowed `azp` origins of Clerk session tokens, comma-separated; unset = the origin of
    PUBLIC_URL. An empty value is a configuration error when AUTH_PROVIDER=clerk."""
    clerk_publishable_key: str | None = None
    """Clerk publishable key, for the sign-in page."""
    clerk_webhook_secret: SecretStr | None = None
    """Svix signing secret (`whsec_…`) of the Clerk webhook endpoint."""
    allow_signup: bool = True
    """Whether anyone may create a local account on the sign-up page."""
    sweep_interval: int = Field(default=60, ge=1)
    """Seconds between two sweeps of expired requests (beat)."""
    worker_metrics_port: int = 9808
    """Port of each worker's Prometheus /metrics endpoint."""
    worker_metrics_host: str = "127.0.0.1"
    """Address the worker's /metrics endpoint binds (`0.0.0.0` to let another host scrape)."""
    trusted_proxies: int = Field(default=0, ge=0, le=10)
    """Reverse proxies in front of the api/bff whose X-Forwarded-For/-Proto hops are trusted;
    0 = the client address is the socket's."""
    metrics_token: SecretStr | None = None
    """Bearer token that `/metrics` of the api and the bff require; unset = `/metrics` is 404."""
    log_level: str = "INFO"
    """Level of the JSON logs of every server process."""
    max_body_bytes: int = 1024 * 1024
    """Largest request body the api accepts, in bytes."""
    key_versions_kept: int = Field(default=20, ge=1, le=1000)
    """Versions of each key value kept (the current one included); older ones are deleted."""
    connector_sweep_interval: int = Field(default=30, ge=1)
    """Seconds between two beat sweeps that enqueue the connector links due a sync (issue #18)."""
    connector_aws_write_tps: float = Field(default=40.0, gt=0, le=50)
    """Writes per second to one AWS account and region, all workers together (AWS: 50)."""
    connector_aws_read_tps: float = Field(default=5000.0, gt=0, le=10000)
    """Reads per second from one AWS account and region, all workers together (AWS: 10,000)."""
    connector_gcp_access_per_minute: int = Field(default=72000, ge=1, le=90000)
    """Secret version accesses per minute to one GCP project, all workers (GCP: 90,000)."""
    connector_gcp_admin_per_minute: int = Field(default=480, ge=1, le=600)
    """Other Secret Manager calls per minute to one GCP project, all workers (GCP: 600)."""

    @field_validator("bundle_kms_key")
    @classmethod
    def _check_keyring(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        entries = [e.strip() for e in value.get_secret_value().split(",") if e.strip()]
        if not entries:
            raise ValueError("must hold at least one key")
        for entry in entries:
            try:
                raw = base64.urlsafe_b64decode(entry.encode("ascii"))
            except (binascii.Error, UnicodeEncodeError):
                raise ValueError("each key must be urlsafe base64") from None
            if len(raw) != KMS_KEY_BYTES:
                raise ValueError("each key must decode to 32 bytes")
        return value

    @field_validator("bff_shared_secret")
    @classmethod
    def _check_shared_secret(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if len(text) < MIN_SHARED_SECRET_HEX or not _HEX.match(text):
            raise ValueError(f"must be at least {MIN_SHARED_SECRET_HEX} hex characters")
        return value

    @field_validator("delivery_signing_key")
    @classmethod
    def _check_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                SigningKeyring.from_setting(value.get_secret_value())
            except EnvelopeError:
                raise ValueError("must be urlsafe-base64 32-byte Ed25519 seeds") from None
        return value

    @field_validator("delivery_public_keys")
    @classmethod
    def _check_public_keys(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                [decode_key(entry) for entry in value.split(",") if entry.strip()]
            except EnvelopeError:
                raise ValueError("must be urlsafe-base64 32-byte Ed25519 public keys") from None
        return value

    @model_validator(mode="after")
    def _check_clerk(self) -> Settings:
        if self.auth_provider == "clerk" and not (self.clerk_jwt_key or self.clerk_jwks_url):
            raise ValueError("AUTH_PROVIDER=clerk needs CLERK_JWT_KEY or CLERK_JWKS_URL")
        if self.auth_provider == "clerk" and not self.authorized_parties:
            raise ValueError("AUTH_PROVIDER=clerk needs CLERK_AUTHORIZED_PARTIES (or unset it)")
        return self

    def kms_key_value(self) -> str:
        """The BUNDLE_KMS_KEY keyring text; ConfigError when this process was started without it."""
        if self.bundle_kms_key is None:
            raise ConfigError("envcat: configuration error: BUNDLE_KMS_KEY: Field required")
        return self.bundle_kms_key.get_secret_value()

    def signing_keyring(self) -> SigningKeyring:
        """The delivery signing keys; ConfigError when this process was started without them."""
        if self.delivery_signing_key is None:
            raise ConfigError("envcat: configuration error: DELIVERY_SIGNING_KEY: Field required")
        return _signing_keyring(self.delivery_signing_key.get_secret_value())

    def signing_keyring_text(self) -> str:
        """The DELIVERY_SIGNING_KEY text, for child processes; ConfigError when unset."""
        self.signing_keyring()
        assert self.delivery_signing_key is not None  # noqa: S101  # checked just above
        return self.delivery_signing_key.get_secret_value()

    def server_public_keys(self) -> list[bytes]:
        """Raw public keys of the delivery signing keyring, primary first (may be empty)."""
        if self.delivery_public_keys:
            return [decode_key(e) for e in self.delivery_public_keys.split(",") if e.strip()]
        if self.delivery_signing_key is not None:
            return self.signing_keyring().public_keys
        return []

    @property
    def broker_url(self) -> str:
        """The Celery broker: CELERY_BROKER_URL, else REDIS_URL."""
        return self.celery_broker_url or self.redis_url

    @property
    def authorized_parties(self) -> list[str]:
        """Allowed `azp` origins for Clerk tokens (default: the origin of PUBLIC_URL)."""
        if self.clerk_authorized_parties is None:
            parts = urlsplit(self.public_url)
            return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme and parts.netloc else []
        return [p.strip() for p in self.clerk_authorized_parties.split(",") if p.strip()]


@functools.lru_cache(maxsize=4)
def _signing_keyring(text: str) -> SigningKeyring:
    # parsed once per process: each delivery signs with it
    return SigningKeyring.from_setting(text)


def describe_error(exc: ValidationError) -> str:
    """Return one line naming the first bad variable, without echoing its value."""
    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "configuration"
    message = first["msg"].removeprefix("Value error, ")
    return f"{name}: {message}"


def load_settings(*, needs_kms_key: bool = True, **overrides: object) -> Settings:
    """Read the environment; on a bad value raise ConfigError with one clear line.

    Processes that touch values at rest need BUNDLE_KMS_KEY; the bff passes
    `needs_kms_key=False` so the internet-facing process never holds it.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings fills the rest
    except ValidationError as exc:
        raise ConfigError(f"envcat: configuration error: {describe_error(exc)}") from None
    if needs_kms_key:
        settings.kms_key_value()
    return settings
