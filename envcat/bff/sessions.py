"""Server-side sessions of local accounts, in Redis, so a session can be revoked.

The signed cookie holds only a random session id (and the CSRF token). Redis holds
the record under `bff:sess:<sha256(id)>`: a copy of Redis alone cannot be replayed
as a cookie. Each user's record keys sit in the set `bff:sess:user:<user id>`, so
sign-out everywhere, a password change and account deletion can revoke them all.
Records expire 12 h after sign-in whatever happens to the cookie.

Each record carries a MAC (HMAC-SHA256 under a key derived from the session
secret, which Redis never holds) over its key and fields, so a writer to Redis
cannot turn a record into another user's: an edited record reads as no session
(issue #23, the threat model's Redis row).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.typing import EncodableT, FieldT

PREFIX = "bff:sess:"
USER_PREFIX = "bff:sess:user:"
LIFETIME_SECONDS = 12 * 60 * 60
SESSION_ID_BYTES = 32
_FIELDS = ("user", "tenant", "email", "role", "created")
_MAC_LABEL = b"envcat/bff-session-record/v1"


def record_mac_key(session_secret: str) -> bytes:
    """The key session records are MACed with, derived from the bff's session secret."""
    return hmac.new(session_secret.encode("utf-8"), _MAC_LABEL, hashlib.sha256).digest()


def _record_key(session_id: str) -> str:
    return PREFIX + hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _user_key(user_id: str) -> str:
    return USER_PREFIX + user_id


@dataclass(frozen=True)
class SessionRecord:
    """What a live session says about its user."""

    user_id: str
    tenant_id: str
    email: str
    role: str
    created_at: float


@dataclass(frozen=True)
class SessionStore:
    """Create, read and revoke session records in Redis."""

    redis: redis.Redis
    mac_key: bytes
    lifetime: int = LIFETIME_SECONDS
    clock: Callable[[], float] = field(default=time.time)

    def _mac(self, key: str, values: list[str]) -> str:
        message = "\x1f".join([key, *values]).encode("utf-8")
        return hmac.new(self.mac_key, message, hashlib.sha256).hexdigest()

    def create(self, user_id: str, tenant_id: str, email: str, role: str) -> str:
        """Store a new session for this user and return its (secret) id for the cookie."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        key = _record_key(session_id)
        values = [user_id, tenant_id, email, role, repr(self.clock())]
        record: dict[FieldT, EncodableT] = dict(zip(_FIELDS, values, strict=True))
        record["mac"] = self._mac(key, values)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=record)
        pipe.expire(key, self.lifetime)
        pipe.sadd(_user_key(user_id), key)
        pipe.expire(_user_key(user_id), self.lifetime)
        pipe.execute()
        return session_id

    def load(self, session_id: str) -> SessionRecord | None:
        """The live record of this id, or None when it was revoked, expired or never existed."""
        key = _record_key(session_id)
        stored = self.redis.hmget(key, [*_FIELDS, "mac"])
        if any(not isinstance(value, str) for value in stored):
            return None
        *values, mac = (str(value) for value in stored)
        if not hmac.compare_digest(self._mac(key, values), mac):
            return None  # edited in Redis: not a session of anyone
        user, tenant, email, role, created = values
        return SessionRecord(user, tenant, email, role, float(created))

    def revoke(self, session_id: str) -> None:
        """End one session (sign-out)."""
        key = _record_key(session_id)
        user = self.redis.hget(key, "user")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        if isinstance(user, str):
            pipe.srem(_user_key(user), key)
        pipe.execute()

    def revoke_user(self, user_id: str, keep: str | None = None) -> int:
        """End every session of the user except `keep`'s; return how many were ended."""
        kept = _record_key(keep) if keep is not None else None
        members = [str(m) for m in self.redis.smembers(_user_key(user_id))]
        doomed = [key for key in members if key != kept]
        if not doomed:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(*doomed)
        pipe.srem(_user_key(user_id), *doomed)
        ended = pipe.execute()[0]
        return int(ended)

    def count(self, user_id: str) -> int:
        """How many sessions of the user are live (expired ones are pruned on the way)."""
        members = [str(m) for m in self.redis.smembers(_user_key(user_id))]
        if not members:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for key in members:
            pipe.exists(key)
        alive = pipe.execute()
        dead = [key for key, exists in zip(members, alive, strict=True) if not exists]
        if dead:
            self.redis.srem(_user_key(user_id), *dead)
        return len(members) - len(dead)
