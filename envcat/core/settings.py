"""The one configuration object (DESIGN §2), read from environment variables.

Build it once per entry point with `load_settings()` and pass it down; nothing
else reads `os.environ`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
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
    approval_backlog_limit: int = Field(default=2000, ge=0)
    """Approvals that may wait in the queue before new requests and approvals are refused
    with 503 and Retry-After (0: never refuse). Size it to what the workers clear well
    within REQUEST_TTL."""
    audit_sink_interval: int = Field(default=10, ge=1)
    """Seconds between two rounds of shipping new audit events to the workspaces' syslog sinks."""
    audit_sink_allow_private: bool = False
    """Let audit sinks be private, loopback or link-local addresses (a single-tenant deployment
    whose collector is on its own network). Off, a workspace admin cannot make the workers
    connect to the deployment's internal hosts."""
    audit_verify_interval: int = Field(default=6 * 3600, ge=60)
    """Seconds between two verifications of every audit chain (beat; sets the
    `envcat_audit_chains_broken` metric the shipped alert rules watch)."""
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
    backup_public_key: str | None = None
    """X25519 public key (urlsafe base64, from `envcat server backup-keygen`) that
    `envcat server backup` encrypts to; its private key stays off the server."""
    backup_signing_key: SecretStr | None = None
    """Ed25519 seed (urlsafe base64, from `envcat server backup-signing-keygen`) that
    `envcat server backup` signs with, so `restore --signed-by` can tell its files from
    files forged with the public BACKUP_PUBLIC_KEY. Only on the host that writes backups."""
    invite_ttl: int = Field(default=7 * 24 * 3600, ge=300, le=90 * 24 * 3600)
    """Seconds an invitation to a workspace stays valid (issue #17)."""
    smtp_host: str | None = None
    """SMTP server for notifications and invitations; unset = no email is sent."""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    """Port of SMTP_HOST."""
    smtp_from: str = "envcat@localhost"
    """Sender address of EnvCat's emails."""
    smtp_starttls: bool = False
    """Upgrade the SMTP connection with STARTTLS before sending (and before logging in)."""
    smtp_username: str | None = None
    """SMTP login name, when the server needs one (with SMTP_PASSWORD)."""
    smtp_password: SecretStr | None = None
    """SMTP password."""
    notify_max_per_workspace: int = Field(default=30, ge=1)
    """Request notifications one workspace receives per hour; anonymous requests beyond it
    are still created but notify nobody."""
    notify_dedupe_seconds: int = Field(default=300, ge=0)
    """Requests for the same bundle from the same client address within this many seconds
    notify once."""
    webhook_allow_http_loopback: bool = False
    """Accept `http://` webhook URLs on loopback hosts (development and tests)."""
    webhook_allow_private: bool = False
    """Deliver webhooks to private, loopback and link-local addresses (off: SSRF guard)."""
    redis_tls_ca_file: str | None = None
    """CA certificate (PEM) the Redis server's certificate must chain to, for `rediss://`
    REDIS_URL and broker URLs; unset = the system's trusted CAs."""
    redis_tls_cert_file: str | None = None
    """Client certificate (PEM) for a Redis that requires one (mutual TLS); with
    REDIS_TLS_KEY_FILE."""
    redis_tls_key_file: str | None = None
    """Private key (PEM) of REDIS_TLS_CERT_FILE."""
    redis_sentinels: str | None = None
    """Redis Sentinel addresses, `host:port` comma-separated: the store, the rate limiter and
    (unless CELERY_BROKER_URL is set) the broker find the primary through them, again after
    a failover. REDIS_URL then gives only the database number and password."""
    redis_sentinel_master: str | None = None
    """Name of the primary the sentinels watch (`sentinel monitor <name> …`)."""
    otel_traces_exporter: Literal["none", "otlp", "console"] = "none"
    """Where OpenTelemetry traces go: `none` (tracing off, the default), `otlp` (OTLP over
    HTTP, configured by the standard OTEL_EXPORTER_OTLP_* variables) or `console` (stdout).
    Needs the `otel` extra (docs/observability.md)."""
    otel_service_name: str | None = None
    """`service.name` of this process's spans; unset = `envcat-api`, `envcat-bff` or
    `envcat-worker`."""
    otel_sdk_disabled: bool = False
    """OpenTelemetry's standard switch: `true` turns tracing off whatever the exporter says."""
    oidc_issuers: str | None = None
    """OIDC issuers trust policies may name, comma-separated (e.g.
    `https://token.actions.githubusercontent.com`); unset = any https issuer. Either way the
    api only ever fetches the discovery document and keys of an issuer that a policy of the
    requested workspace names (issue #16)."""
    oidc_allow_http: bool = False
    """Accept `http://` issuers on loopback addresses (127.0.0.1, ::1, localhost): for tests
    and local development only; https is required otherwise."""
    oidc_jwks_cooldown: int = Field(default=60, ge=0, le=3600)
    """Seconds between two fetches of an issuer's keys for an unknown key id (or after a failed
    fetch): a stream of forged `kid`s cannot make the api hammer the issuer."""
    oidc_jwks_ttl: int = Field(default=3600, ge=60, le=86400)
    """Seconds an issuer's keys are used before they are fetched again."""
    oidc_leeway: int = Field(default=30, ge=0, le=300)
    """Clock skew allowed when checking an ID token's `exp`, `nbf` and `iat`, in seconds."""
    service_token_max_days: int = Field(default=90, ge=1, le=3650)
    """Longest lifetime an admin may give a service token, in days (issue #16)."""
    service_token_rate_limit: int = Field(default=30, ge=1, le=10000)
    """Requests one service token may make per minute; more get 429."""
    service_token_admin_rate_limit: int = Field(default=300, ge=1, le=100000)
    """Api calls one admin service token (bundles as code, issue #16) may make per minute
    through the bff; a plan reads each bundle, so it needs more than a release does."""
    scan_fingerprint_key: SecretStr | None = None
    """HMAC key of the secret-scanning fingerprints (issue #19): urlsafe-base64 32 bytes (the
    format of a BUNDLE_KMS_KEY entry). Unset = derived from each BUNDLE_KMS_KEY entry, so a
    KMS rotation keeps matching; after a change run `envcat server scan-fingerprints`."""
    scan_batch_max: int = Field(default=1000, ge=1, le=10000)
    """Most SHA-256 hashes one scan call may submit (the endpoint is a hash oracle)."""
    scan_rate_limit: int = Field(default=30, ge=1, le=10000)
    """Scan calls one credential may make per minute; more get 429."""
    user_token_hours: int = Field(default=12, ge=1, le=720)
    """How long the token of a terminal signed in with `envcat login` lives, in hours
    (issue #16); revoked earlier by `envcat logout` or on the account page."""
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

    @field_validator("backup_public_key")
    @classmethod
    def _check_backup_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                raw = base64.urlsafe_b64decode(value.strip().encode("ascii"))
            except (binascii.Error, UnicodeEncodeError):
                raise ValueError("must be urlsafe base64") from None
            if len(raw) != KMS_KEY_BYTES:
                raise ValueError("must decode to a 32-byte X25519 public key")
        return value

    @field_validator("backup_signing_key", "scan_fingerprint_key")
    @classmethod
    def _check_32_byte_secret(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is not None:
            try:
                raw = base64.urlsafe_b64decode(value.get_secret_value().strip().encode("ascii"))
            except (binascii.Error, UnicodeEncodeError):
                raise ValueError("must be urlsafe base64") from None
            if len(raw) != KMS_KEY_BYTES:
                what = "Ed25519 seed" if info.field_name == "backup_signing_key" else "key"
                raise ValueError(f"must decode to a 32-byte {what}")
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

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _check_tls_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError("no such file")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_addresses(value)
        return value

    @model_validator(mode="after")
    def _check_redis(self) -> Settings:
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise ValueError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together")
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            raise ValueError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together")
        is_tls = any(
            url.startswith("rediss://") for url in (self.redis_url, self.celery_broker_url or "")
        )
        if (self.redis_tls_ca_file or self.redis_tls_cert_file) and not is_tls:
            # A CA file beside a redis:// URL means someone expects TLS that would not happen.
            raise ValueError("REDIS_TLS_* needs a rediss:// REDIS_URL or CELERY_BROKER_URL")
        if self.redis_sentinels and self.redis_url.startswith("rediss://"):
            raise ValueError("Redis Sentinel with TLS is not supported: use one or the other")
        return self

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
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        return _parse_addresses(self.redis_sentinels) if self.redis_sentinels else []

    @property
    def oidc_issuer_allow_list(self) -> list[str] | None:
        """OIDC_ISSUERS as a list, or None when any https issuer may be named."""
        if self.oidc_issuers is None:
            return None
        return [issuer.strip() for issuer in self.oidc_issuers.split(",") if issuer.strip()]

    @property
    def broker_url(self) -> str:
        """The Celery broker: CELERY_BROKER_URL, else REDIS_URL (kombu's `sentinel://` list
        of REDIS_SENTINELS, with REDIS_URL's password and database, under Sentinel)."""
        if self.celery_broker_url or not self.redis_sentinels:
            return self.celery_broker_url or self.redis_url
        parts = urlsplit(self.redis_url)
        credentials = f"{parts.netloc.rpartition('@')[0]}@" if "@" in parts.netloc else ""
        database = url_database(self.redis_url)
        return ";".join(
            f"sentinel://{credentials}{host}:{port}/{database}"
            for host, port in self.sentinel_addresses
        )

    @property
    def authorized_parties(self) -> list[str]:
        """Allowed `azp` origins for Clerk tokens (default: the origin of PUBLIC_URL)."""
        if self.clerk_authorized_parties is None:
            parts = urlsplit(self.public_url)
            return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme and parts.netloc else []
        return [p.strip() for p in self.clerk_authorized_parties.split(",") if p.strip()]


def _parse_addresses(text: str) -> list[tuple[str, int]]:
    addresses = []
    for entry in (e.strip() for e in text.split(",")):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port pairs, comma-separated")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def url_database(url: str) -> int:
    """The database number a redis:// URL names (0 when it names none)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


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
