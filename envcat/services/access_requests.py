"""The ephemeral request store in Redis (DESIGN §7).

`req:{id}` holds a request for REQUEST_TTL seconds; only public keys, hashes
and sealed ciphertext ever go in. State changes are single Lua scripts, so a
ready request is handed out exactly once however many waiters race for it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
from redis.typing import EncodableT, FieldT

from envcat.core.usercode import user_code

PENDING_INDEX = "requests:pending"
UNCLAIMED_INDEX = "requests:unclaimed"
WAKE_TTL_SECONDS = 60
TOKEN_BYTES = 24  # 192 bits for both the request id and the poll token

Status = Literal["pending", "ready", "denied", "failed"]
PollStatus = Literal["pending", "ready", "denied", "failed", "gone", "bad_token"]


def request_key(request_id: str) -> str:
    """The Redis hash of one request."""
    return f"req:{request_id}"


def wake_key(request_id: str) -> str:
    """The list a long poll blocks on; the worker pushes to it when state changes."""
    return f"req:{request_id}:wake"


def poll_rate_key(request_id: str) -> str:
    """Set while a short poll must not come again (RFC 8628 slow_down)."""
    return f"req:{request_id}:poll"


def hash_poll_token(token: str) -> str:
    """Only this hash is stored: a Redis reader cannot take deliveries."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AccessRequest:
    """A request as the approval page and the api see it."""

    id: str
    status: Status
    cli_pub: str
    user_code: str
    context: dict[str, Any]
    template_keys: list[str]
    bundle: str | None
    bundle_id: str | None
    created: float
    expires_at: float
    approved_by: str | None = None
    approved_tenant: str | None = None
    approved_at: float | None = None
    approval: dict[str, Any] | None = None  # recorded by mark_approved

    @property
    def seconds_left(self) -> int:
        """Whole seconds until expiry, never negative."""
        return max(0, int(self.expires_at - time.time()))


@dataclass(frozen=True)
class PollResult:
    """What one poll saw; `ciphertext` only when `status == "ready"` (and then once)."""

    status: PollStatus
    ciphertext: str | None = None
    message: str | None = None
    approval: dict[str, str] = field(default_factory=dict)


def create(
    r: redis.Redis,
    *,
    ttl: int,
    cli_pub: str,
    bundle: str | None = None,
    bundle_id: str | None = None,
    template_keys: list[str] | None = None,
    context: dict[str, Any] | None = None,
) -> tuple[AccessRequest, str]:
    """Store a new pending request; return it with the poll token (shown once)."""
    request_id = secrets.token_urlsafe(TOKEN_BYTES)
    poll_token = secrets.token_urlsafe(TOKEN_BYTES)
    now = time.time()
    request = AccessRequest(
        id=request_id,
        status="pending",
        cli_pub=cli_pub,
        user_code=user_code(request_id, cli_pub),
        context=context or {},
        template_keys=template_keys or [],
        bundle=bundle,
        bundle_id=bundle_id,
        created=now,
        expires_at=now + ttl,
    )
    fields: dict[FieldT, EncodableT] = {
        "status": "pending",
        "cli_pub": cli_pub,
        "user_code": request.user_code,
        "context": json.dumps(request.context),
        "template_keys": json.dumps(request.template_keys),
        "bundle": bundle or "",
        "bundle_id": bundle_id or "",
        "created": repr(now),
        "expires_at": repr(request.expires_at),
        "poll_token_hash": hash_poll_token(poll_token),
    }
    pipe = r.pipeline(transaction=True)
    pipe.hset(request_key(request_id), mapping=fields)
    pipe.expire(request_key(request_id), ttl)
    pipe.zadd(PENDING_INDEX, {request_id: request.expires_at})
    pipe.execute()
    return request, poll_token


def get(r: redis.Redis, request_id: str) -> AccessRequest | None:
    """Return the request, or None when unknown, expired or already delivered."""
    data: dict[str, str] = r.hgetall(request_key(request_id))  # type: ignore[assignment]
    if not data or float(data.get("expires_at", "0")) <= time.time():
        return None
    return AccessRequest(
        id=request_id,
        status=data["status"],  # type: ignore[arg-type]  # written only by this module
        cli_pub=data["cli_pub"],
        user_code=data["user_code"],
        context=json.loads(data["context"]),
        template_keys=json.loads(data["template_keys"]),
        bundle=data["bundle"] or None,
        bundle_id=data["bundle_id"] or None,
        created=float(data["created"]),
        expires_at=float(data["expires_at"]),
        approved_by=data.get("approved_by") or None,
        approved_tenant=data.get("approved_tenant") or None,
        approved_at=float(data["approved_at"]) if data.get("approved_at") else None,
        approval=json.loads(data["approval"]) if data.get("approval") else None,
    )


# KEYS: req hash, wake list, pending index, unclaimed index. ARGV: token hash.
_TAKE = """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return {'gone'} end
if redis.call('HGET', h, 'poll_token_hash') ~= ARGV[1] then return {'bad_token'} end
local status = redis.call('HGET', h, 'status')
if status == 'pending' then return {'pending'} end
local f = redis.call('HMGET', h, 'ciphertext', 'message', 'approved_by',
                     'approved_tenant', 'bundle_id', 'unclaimed_member', 'approved_at')
redis.call('DEL', h)
redis.call('ZREM', KEYS[3], string.sub(h, 5))
if f[6] then redis.call('ZREM', KEYS[4], f[6]) end
return {status, f[1] or '', f[2] or '', f[3] or '', f[4] or '', f[5] or '', f[7] or ''}
"""

# KEYS: req hash, wake list, pending index, unclaimed index.
# ARGV: new status, json of fields to set, unclaimed member ('' for none), wake TTL,
# '1' to refuse a request whose approval is already being carried out.
_FINISH = """
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'pending' then return 0 end
if ARGV[5] == '1' and redis.call('HEXISTS', h, 'approved_at') == 1 then return 0 end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', h, k, v) end
redis.call('HSET', h, 'status', ARGV[1])
redis.call('ZREM', KEYS[3], string.sub(h, 5))
if ARGV[3] ~= '' then
  redis.call('HSET', h, 'unclaimed_member', ARGV[3])
  redis.call('ZADD', KEYS[4], redis.call('HGET', h, 'expires_at'), ARGV[3])
end
redis.call('LPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: req hash, wake list, pending index, unclaimed index. ARGV: token hash.
_CANCEL = """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return {'gone', ''} end
if redis.call('HGET', h, 'poll_token_hash') ~= ARGV[1] then return {'bad_token', ''} end
local f = redis.call('HMGET', h, 'approval', 'unclaimed_member')
redis.call('DEL', h)
redis.call('ZREM', KEYS[3], string.sub(h, 5))
if f[2] then redis.call('ZREM', KEYS[4], f[2]) end
redis.call('LPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], 60)
return {'cancelled', f[1] or ''}
"""

# KEYS: req hash. ARGV: approval json, approved_at.
_APPROVE = """
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'pending' then return 0 end
if redis.call('HEXISTS', h, 'approved_at') == 1 then return 0 end
redis.call('HSET', h, 'approval', ARGV[1], 'approved_at', ARGV[2])
return 1
"""

# KEYS: req hash.
_RELEASE_APPROVAL = """
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'pending' then return 0 end
return redis.call('HDEL', h, 'approval', 'approved_at')
"""


def _keys(request_id: str) -> list[str]:
    return [request_key(request_id), wake_key(request_id), PENDING_INDEX, UNCLAIMED_INDEX]


def take(r: redis.Redis, request_id: str, poll_token: str) -> PollResult:
    """Look at a request as its CLI; a final state is returned once and deleted atomically."""
    reply: list[str] = r.eval(_TAKE, 4, *_keys(request_id), hash_poll_token(poll_token))
    status = reply[0]
    if status in ("gone", "bad_token", "pending"):
        return PollResult(status=status)  # type: ignore[arg-type]
    ciphertext, message, approved_by, tenant, bundle_id, approved_at = reply[1:7]
    approval = {
        "approved_by": approved_by,
        "tenant_id": tenant,
        "bundle_id": bundle_id,
        "approved_at": approved_at,
    }
    return PollResult(
        status=status,  # type: ignore[arg-type]
        ciphertext=ciphertext or None,
        message=message or None,
        approval={k: v for k, v in approval.items() if v},
    )


def _finish(
    r: redis.Redis,
    request_id: str,
    status: Status,
    fields: dict[str, str],
    unclaimed_member: str = "",
    *,
    unless_approved: bool = False,
) -> bool:
    done = r.eval(
        _FINISH,
        4,
        *_keys(request_id),
        status,
        json.dumps(fields),
        unclaimed_member,
        WAKE_TTL_SECONDS,
        "1" if unless_approved else "",
    )
    return bool(done)


def mark_ready(
    r: redis.Redis,
    request_id: str,
    *,
    ciphertext_b64: str,
    approved_by: str,
    tenant_id: str,
    bundle_id: str,
) -> bool:
    """Store the sealed payload and wake waiters; False if no longer pending."""
    member = json.dumps(
        {"id": request_id, "tenant_id": tenant_id, "user_id": approved_by, "bundle_id": bundle_id},
        sort_keys=True,
    )
    fields = {
        "ciphertext": ciphertext_b64,
        "approved_by": approved_by,
        "approved_tenant": tenant_id,
        "bundle_id": bundle_id,
    }
    return _finish(r, request_id, "ready", fields, member)


def mark_denied(r: redis.Redis, request_id: str, *, denied_by: str, tenant_id: str) -> bool:
    """Record a refusal and wake waiters; False if no longer pending or already approved."""
    fields = {"approved_by": denied_by, "approved_tenant": tenant_id}
    return _finish(r, request_id, "denied", fields, unless_approved=True)


def mark_approved(r: redis.Redis, request_id: str, *, approval: dict[str, Any], at: float) -> bool:
    """Record that an approval is being carried out; False if decided or approved already.

    The request stays `pending` for its CLI until the worker marks it ready or
    failed; a second approval or a denial is refused from now on.
    """
    return bool(r.eval(_APPROVE, 1, request_key(request_id), json.dumps(approval), repr(at)))


def release_approval(r: redis.Redis, request_id: str) -> None:
    """Undo `mark_approved` while the request is still pending (its audit write failed)."""
    r.eval(_RELEASE_APPROVAL, 1, request_key(request_id))


def mark_failed(r: redis.Redis, request_id: str, *, message: str) -> bool:
    """Record that an approval could not be carried out; False if no longer pending."""
    return _finish(r, request_id, "failed", {"message": message})


@dataclass(frozen=True)
class Cancellation:
    """What a cancel did; `approval` is the recorded approval when there was one."""

    outcome: Literal["cancelled", "gone", "bad_token"]
    approval: dict[str, Any] | None = None


def cancel_request(r: redis.Redis, request_id: str, poll_token: str) -> Cancellation:
    """Delete a request on behalf of its CLI (Ctrl-C), reporting any approval it had."""
    reply: list[str] = r.eval(_CANCEL, 4, *_keys(request_id), hash_poll_token(poll_token))
    outcome, approval = reply
    return Cancellation(
        outcome=outcome,  # type: ignore[arg-type]  # written only by _CANCEL
        approval=json.loads(approval) if approval else None,
    )


def cancel(
    r: redis.Redis, request_id: str, poll_token: str
) -> Literal["cancelled", "gone", "bad_token"]:
    """Delete a request on behalf of its CLI (Ctrl-C); return only the outcome."""
    return cancel_request(r, request_id, poll_token).outcome


def wait_for_change(r_blocking: redis.Redis, request_id: str, timeout: float) -> bool:
    """Block until the request's state changes or `timeout` passes; True when woken.

    The wake token is pushed back at once so every other waiter on the same
    request wakes too (a chain, not a single hand-off).
    """
    if timeout <= 0:
        return False
    popped = r_blocking.blpop([wake_key(request_id)], timeout=timeout)
    if popped is None:
        return False
    pipe = r_blocking.pipeline(transaction=True)
    pipe.lpush(wake_key(request_id), "1")
    pipe.expire(wake_key(request_id), WAKE_TTL_SECONDS)
    pipe.execute()
    return True


def is_polling_too_fast(r: redis.Redis, request_id: str, interval: int) -> bool:
    """True when a short poll comes sooner than `interval` after the previous one."""
    first = r.set(poll_rate_key(request_id), "1", nx=True, ex=max(1, interval))
    return not first


def prune_pending(r: redis.Redis, now: float, limit: int) -> list[str]:
    """Remove up to `limit` expired ids from the pending index; return those removed."""
    expired: list[str] = r.zrangebyscore(PENDING_INDEX, "-inf", now, start=0, num=limit)  # type: ignore[assignment]
    removed = []
    for request_id in expired:
        if r.zrem(PENDING_INDEX, request_id):
            removed.append(request_id)
    return removed


def claim_unclaimed(r: redis.Redis, now: float, limit: int) -> list[dict[str, str]]:
    """Take up to `limit` approved-but-never-collected requests that have expired.

    ZREM decides the owner, so concurrent sweeps handle each one once.
    """
    members: list[str] = r.zrangebyscore(UNCLAIMED_INDEX, "-inf", now, start=0, num=limit)  # type: ignore[assignment]
    claimed = []
    for member in members:
        if r.zrem(UNCLAIMED_INDEX, member):
            claimed.append(json.loads(member))
    return claimed


def release_unclaimed(r: redis.Redis, entry: dict[str, str], score: float) -> None:
    """Put a claimed entry back after a failed sweep step, so the next sweep retries it."""
    r.zadd(UNCLAIMED_INDEX, {json.dumps(entry, sort_keys=True): score})


def pending_count(r: redis.Redis) -> int:
    """Requests still waiting for a decision (for the dashboard and metrics)."""
    return int(r.zcount(PENDING_INDEX, time.time(), "+inf"))
