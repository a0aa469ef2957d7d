"""Sign-in throttling in Redis that slows guessing without locking the owner out.

Three rules, checked atomically before the password is looked at:

1. **Per (network, email):** 10 failures in 15 min refuse that pair until the window ends.
2. **Per network:** 100 failures in 15 min (any email) refuse that network.
3. **Per email, exponential delay:** after 5 free failures each failure pushes the email's
   `next_allowed_at` forward by 1 s, 2 s, 4 s … capped at 15 min. The delay is enforced
   only against networks that have themselves failed 3 times for this email in the last
   24 h; such an attempt before `next_allowed_at` is refused *without checking the
   password* (no oracle), and one that is admitted claims the next slot at once, so
   concurrent guesses cannot share it. A network that has not failed for this email is
   never delayed: a stranger hammering the address from elsewhere cannot keep the owner
   out. docs/security.md gives the worst-case guess rate this allows.

A "network" is the client address (IPv4) or its /64 (IPv6, where one host holds a /64).
Every key is a hash (Redis holds no emails or addresses) and expires on its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis

FAILURE_LIMIT = 10
IP_FAILURE_LIMIT = 100
WINDOW_SECONDS = 15 * 60
FREE_EMAIL_FAILURES = 5
DELAY_BASE_SECONDS = 1
DELAY_CAP_SECONDS = 15 * 60
TAINT_AFTER = 3
MEMORY_SECONDS = 24 * 60 * 60
SIGNUP_LIMIT = 20
SIGNUP_WINDOW_SECONDS = 60 * 60
IPV6_NETWORK_PREFIX = 64

# Why an attempt was refused (the first element of the check script's reply).
REASON_PAIR, REASON_NETWORK, REASON_DELAY = 1, 2, 3

# KEYS: pair counter, network counter, email state hash {n, next}, taint counter.
# ARGV: now, pair limit, network limit, taint-after, free failures, base, cap.
# Returns {0, 0} to admit (claiming the email's next slot for a tainted network), or
# {reason, seconds to wait}.
_CHECK = """
local function delay(n)
  local free = tonumber(ARGV[5])
  if n <= free then return 0 end
  return math.min(tonumber(ARGV[6]) * 2 ^ (n - free - 1), tonumber(ARGV[7]))
end
local now = tonumber(ARGV[1])
local pair = tonumber(redis.call('GET', KEYS[1]) or '0')
if pair >= tonumber(ARGV[2]) then return {1, math.max(1, redis.call('TTL', KEYS[1]))} end
local net = tonumber(redis.call('GET', KEYS[2]) or '0')
if net >= tonumber(ARGV[3]) then return {2, math.max(1, redis.call('TTL', KEYS[2]))} end
local taint = tonumber(redis.call('GET', KEYS[4]) or '0')
if taint < tonumber(ARGV[4]) then return {0, 0} end
local nxt = tonumber(redis.call('HGET', KEYS[3], 'next') or '0')
if now < nxt then return {3, math.max(1, math.ceil(nxt - now))} end
local n = tonumber(redis.call('HGET', KEYS[3], 'n') or '0')
local claim = delay(n + 1)
if claim > 0 then redis.call('HSET', KEYS[3], 'next', tostring(now + claim)) end
return {0, 0}
"""

# KEYS: pair counter, network counter, email state hash, taint counter.
# ARGV: now, window, memory, free failures, base, cap.
_FAIL = """
local function delay(n)
  local free = tonumber(ARGV[4])
  if n <= free then return 0 end
  return math.min(tonumber(ARGV[5]) * 2 ^ (n - free - 1), tonumber(ARGV[6]))
end
local now = tonumber(ARGV[1])
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[2], 'NX')
end
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[3])
local n = redis.call('HINCRBY', KEYS[3], 'n', 1)
local nxt = math.max(tonumber(redis.call('HGET', KEYS[3], 'next') or '0'), now + delay(n))
redis.call('HSET', KEYS[3], 'next', tostring(nxt))
redis.call('EXPIRE', KEYS[3], ARGV[3])
return n
"""


def _digest(*parts: str) -> str:
    # Hashed: Redis holds no email addresses or client addresses.
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:32]


def network_of(ip: str) -> str:
    """The unit a client is throttled by: the IPv4 address, or the IPv6 /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_NETWORK_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True)
class Refusal:
    """A throttled attempt: which rule refused it and how many seconds to wait."""

    reason: int
    retry_after: int


@dataclass(frozen=True)
class Throttle:
    """Sign-in and sign-up limits; `clock` is injectable so tests need not wait."""

    redis: redis.Redis
    failure_limit: int = FAILURE_LIMIT
    ip_failure_limit: int = IP_FAILURE_LIMIT
    window: int = WINDOW_SECONDS
    free_email_failures: int = FREE_EMAIL_FAILURES
    delay_base: int = DELAY_BASE_SECONDS
    delay_cap: int = DELAY_CAP_SECONDS
    taint_after: int = TAINT_AFTER
    memory: int = MEMORY_SECONDS
    signup_limit: int = SIGNUP_LIMIT
    clock: Callable[[], float] = field(default=time.time)

    def _keys(self, ip: str, email: str) -> list[str]:
        network = network_of(ip)
        return [
            f"bff:signin:fail:{_digest(network, email)}",
            f"bff:signin:net:{_digest(network)}",
            f"bff:signin:email:{_digest(email)}",
            f"bff:signin:taint:{_digest(network, email)}",
        ]

    def admit(self, ip: str, email: str) -> Refusal | None:
        """None when this attempt may check its password now, else why and how long to wait."""
        args = [self.clock(), self.failure_limit, self.ip_failure_limit, self.taint_after]
        args += [self.free_email_failures, self.delay_base, self.delay_cap]
        reply = cast(list[int], self.redis.eval(_CHECK, 4, *self._keys(ip, email), *args))
        reason, wait = int(reply[0]), int(reply[1])
        return None if reason == 0 else Refusal(reason, wait)

    def record_failure(self, ip: str, email: str) -> None:
        """Count one failed sign-in for the pair, the network and the email."""
        args = [self.clock(), self.window, self.memory]
        args += [self.free_email_failures, self.delay_base, self.delay_cap]
        self.redis.eval(_FAIL, 4, *self._keys(ip, email), *args)

    def clear(self, ip: str, email: str) -> None:
        """After a correct password: this network is good for this email again."""
        pair, _, _, taint = self._keys(ip, email)
        self.redis.delete(pair, taint)

    def allow_signup(self, ip: str) -> bool:
        """Count one sign-up attempt from `ip`'s network; False past the hourly limit."""
        key = f"bff:signup:{_digest(network_of(ip))}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, SIGNUP_WINDOW_SECONDS, nx=True)
        count, _ = pipe.execute()
        return int(count) <= self.signup_limit
