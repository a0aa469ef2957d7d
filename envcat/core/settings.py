"""The one configuration object (DESIGN §2), read from environment variables.

Build it once per entry point with `load_settings()` and pass it down; nothing
else reads `os.environ`.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KMS_KEY_BYTES = 32
MIN_SHARED_SECRET_HEX = 64
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class ConfigError(SystemExit):
    """Start-up stops with one line naming the variable; never a traceback."""


class Settings(BaseSettings):
    """Every knob of an EnvCat server process; names match DESIGN §2 case-insensitively."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    database_url: str = "sqlite:///./.envcat/envcat.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str | None = None
    bundle_kms_key: SecretStr
    bff_shared_secret: SecretStr
    session_secret: SecretStr | None = None
    request_ttl: int = Field(default=300, ge=30, le=3600)
    request_rate_limit: str = "60/minute"
    public_url: str = "http://localhost:8888"
    api_base_url: str = "http://127.0.0.1:5000"
    auth_provider: Literal["local", "clerk"] = "local"
    clerk_jwt_key: SecretStr | None = None
    clerk_jwks_url: str | None = None
    clerk_issuer: str | None = None
    clerk_authorized_parties: str = ""
    clerk_publishable_key: str | None = None
    clerk_webhook_secret: SecretStr | None = None
    allow_signup: bool = True
    sweep_interval: int = Field(default=60, ge=1)
    worker_metrics_port: int = 9808
    log_level: str = "INFO"
    max_body_bytes: int = 1024 * 1024

    @field_validator("bundle_kms_key")
    @classmethod
    def _check_keyring(cls, value: SecretStr) -> SecretStr:
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

    @model_validator(mode="after")
    def _check_clerk(self) -> Settings:
        if self.auth_provider == "clerk" and not (self.clerk_jwt_key or self.clerk_jwks_url):
            raise ValueError("AUTH_PROVIDER=clerk needs CLERK_JWT_KEY or CLERK_JWKS_URL")
        return self

    @property
    def broker_url(self) -> str:
        """The Celery broker: CELERY_BROKER_URL, else REDIS_URL."""
        return self.celery_broker_url or self.redis_url

    @property
    def authorized_parties(self) -> list[str]:
        """Allowed `azp` origins for Clerk tokens."""
        return [p.strip() for p in self.clerk_authorized_parties.split(",") if p.strip()]


def describe_error(exc: ValidationError) -> str:
    """Return one line naming the first bad variable, without echoing its value."""
    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "configuration"
    message = first["msg"].removeprefix("Value error, ")
    return f"{name}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Read the environment; on a bad value raise ConfigError with one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings fills the rest
    except ValidationError as exc:
        raise ConfigError(f"envcat: configuration error: {describe_error(exc)}") from None
