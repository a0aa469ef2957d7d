"""Sign-in throttling in Redis: failures per client IP and email, with TTL keys.

A second, looser counter per email alone stops someone who rotates through
client addresses; it is high enough that a stranger cannot easily lock a
person out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis

FAILURE_LIMIT = 10
EMAIL_FAILURE_LIMIT = 50
WINDOW_SECONDS = 15 * 60
SIGNUP_LIMIT = 20
SIGNUP_WINDOW_SECONDS = 60 * 60


def _digest(*parts: str) -> str:
    # Hashed: Redis holds no email addresses.
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Throttle:
    """Counts failed sign-ins and sign-up attempts; every key expires on its own."""

    redis: redis.Redis
    failure_limit: int = FAILURE_LIMIT
    email_failure_limit: int = EMAIL_FAILURE_LIMIT
    window: int = WINDOW_SECONDS
    signup_limit: int = SIGNUP_LIMIT

    def _keys(self, ip: str, email: str) -> tuple[str, str]:
        return (f"bff:signin:fail:{_digest(ip, email)}", f"bff:signin:fail:{_digest(email)}")

    def retry_after(self, ip: str, email: str) -> int | None:
        """Seconds until sign-in may be tried again, or None when allowed now."""
        pair, alone = self._keys(ip, email)
        counts = self.redis.mget([pair, alone])
        for key, count, limit in (
            (pair, counts[0], self.failure_limit),
            (alone, counts[1], self.email_failure_limit),
        ):
            if count is not None and int(count) >= limit:
                return max(1, int(self.redis.ttl(key)))
        return None

    def record_failure(self, ip: str, email: str) -> None:
        """Count one failed sign-in for the pair and for the email."""
        pipe = self.redis.pipeline(transaction=True)
        for key in self._keys(ip, email):
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
        pipe.execute()

    def clear(self, ip: str, email: str) -> None:
        """Forget this pair's failures after a successful sign-in."""
        self.redis.delete(self._keys(ip, email)[0])

    def allow_signup(self, ip: str) -> bool:
        """Count one sign-up attempt from `ip`; False past the hourly limit."""
        key = f"bff:signup:{_digest(ip)}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, SIGNUP_WINDOW_SECONDS, nx=True)
        count, _ = pipe.execute()
        return int(count) <= self.signup_limit
