"""A token bucket in Redis shared by every worker: one per (tenant, provider, scope, kind).

The refill and the take happen in one Lua script (atomic, Redis's own clock). A bucket
of `limit` calls per second holds at most `burst` (a tenth of the limit) and refills at
`limit - burst` per second, so any one-second window grants at most `limit` calls to all
workers together. After a provider throttles us, `pause` stops every worker of that
bucket for a while.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from redis import Redis

log = logging.getLogger("envcat.connectors.ratelimit")

# KEYS[1] bucket hash {tokens, ts}; KEYS[2] pause marker (PTTL = pause left)
# ARGV[1] rate (tokens per second), ARGV[2] burst (bucket size), ARGV[3] cost
# Returns 0 when the tokens were taken, else milliseconds to wait before asking again.
TAKE_SCRIPT = """
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 60000)
return wait
"""
MAX_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Bucket:
    """A shared budget of at most `limit` calls in any one-second window."""

    redis: Redis
    key: str
    limit: float

    @property
    def burst(self) -> float:
        """Tokens an idle bucket holds: a tenth of the limit (at least one call)."""
        return max(1.0, self.limit / 10)

    @property
    def rate(self) -> float:
        """Refill per second: burst + rate = limit, the most one window can see (for a
        limit under 2/s the refill is half the limit and a window may see one call more)."""
        return max(self.limit - self.burst, self.limit / 2)

    def take(self, cost: int = 1) -> float:
        """Block until `cost` tokens are ours; return the seconds spent waiting."""
        cost = max(1, min(cost, int(self.burst)))  # a bigger cost could never be granted
        waited = 0.0
        while True:
            wait_ms = int(
                self.redis.eval(
                    TAKE_SCRIPT, 2, self.key, self.key + ":pause", self.rate, self.burst, cost
                )
            )
            if wait_ms <= 0:
                return waited
            pause = min(wait_ms / 1000, MAX_WAIT_SECONDS) * random.uniform(1.0, 1.2)  # noqa: S311
            time.sleep(pause)
            waited += pause

    def pause(self, seconds: float) -> None:
        """Stop every worker of this bucket for `seconds` (the provider throttled us)."""
        self.redis.set(self.key + ":pause", "1", px=max(1, int(seconds * 1000)))


def bucket(
    redis: Redis, tenant_id: str, provider: str, scope: str, kind: str, limit: float
) -> Bucket:
    """The bucket of one tenant's calls of `kind` ("read"/"write"…) to one region/project."""
    return Bucket(redis, f"connector:rl:{tenant_id}:{provider}:{scope}:{kind}", limit)


def backoff_seconds(attempt: int, *, base: float = 0.2, cap: float = 10.0) -> float:
    """Full-jitter exponential backoff for the `attempt`-th consecutive throttle."""
    return random.uniform(base, min(cap, base * 2**attempt))  # noqa: S311
