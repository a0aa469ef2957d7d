"""Domain errors: each carries the HTTP status and the snake_case code of DESIGN §5."""

from __future__ import annotations

from typing import Any


class EnvCatError(Exception):
    """Base of every error a service raises on purpose."""

    status = 400
    code = "bad_request"
    retry_after: int | None = None  # seconds for a Retry-After header (issue #16)

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(EnvCatError):
    status, code = 400, "validation_error"


class Unauthorized(EnvCatError):
    status, code = 401, "unauthorized"


class InvalidPollToken(EnvCatError):
    status, code = 401, "invalid_poll_token"


class Forbidden(EnvCatError):
    status, code = 403, "forbidden"


class NotFound(EnvCatError):
    status, code = 404, "not_found"


class UnknownWorkspace(NotFound):
    code = "unknown_workspace"


class RateLimited(EnvCatError):
    status, code = 429, "rate_limited"  # details: seconds for Retry-After


class Conflict(EnvCatError):
    status, code = 409, "conflict"


class ExpiredToken(EnvCatError):
    status, code = 410, "expired_token"


class SlowDown(EnvCatError):
    status, code = 400, "slow_down"


class Unavailable(EnvCatError):
    status, code = 503, "unavailable"


class AuditUnavailable(Unavailable):
    """The audit log could not record an event; the change it records is rolled back with it
    (issue #13)."""


class Busy(EnvCatError):
    status, code = 503, "busy"  # details: seconds for Retry-After


class IssuerUnavailable(Unavailable):
    """An OIDC issuer's discovery document or keys cannot be fetched (issue #16)."""

    code = "issuer_unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class InvalidIdToken(EnvCatError):
    """An OIDC ID token is malformed, forged, expired, for another audience or reused."""

    status, code = 401, "invalid_id_token"


class WorkloadNotAllowed(EnvCatError):
    """A valid ID token that no trust policy of the named workspace accepts."""

    status, code = 403, "workload_not_allowed"


class InvalidServiceToken(EnvCatError):
    """A service token that is unknown, revoked, expired or not for this workspace."""

    status, code = 401, "invalid_service_token"
