"""The ephemeral request store in Redis (DESIGN §7).

`req:{id}` holds a request for REQUEST_TTL seconds; only public keys, hashes
and sealed ciphertext ever go in. State changes are single Lua scripts, so a
ready request is handed out exactly once however many waiters race for it.

Compact on purpose (issue #14: at most 1 KB per pending request with Redis's
default `hash-max-listpack-value 64`): the hash holds short fields only, each
value under 64 bytes so it stays a listpack, and what only the approval page
reads (bundle hint, template keys, CLI context) is one JSON string beside it,
`req:{id}:v`. Field names, one to three letters, are listed in FIELDS.

Undecided requests are indexed once, per workspace (`requests:pending:w:<tenant>`,
members `<id> <ip>` scored by whole-second expiry): the approver inbox (issue #15)
lists one of them, and the sweep and redrive walk them through a directory of the
workspaces that have any (`requests:pending:ws`, scored by each one's earliest
expiry). The per-IP counter (`ip:<addr>:n`) and a workspace's index are named
inside the scripts from the request's own `ip` and `tid` fields, so the scripts touch
keys they were not passed: fine on one Redis or Sentinel, not on Redis Cluster (which
EnvCat does not support).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis

from envcat.core.usercode import user_code

# A workspace's undecided requests, `<id> <ip>` by whole-second expiry (compact while at
# most 128), and the workspaces that have any, by their earliest expiry (issue #14).
TENANT_PENDING_PREFIX = "requests:pending:w:"
PENDING_TENANTS = "requests:pending:ws"
# Written by the release before: one index of every workspace's requests (`<id> <ip>` by
# expiry) and an inbox index of ids per workspace. Still read and emptied, so requests
# made before an upgrade are swept, listed and redriven; both are empty 5 minutes after.
PENDING_INDEX = "requests:pending"
LEGACY_TENANT_PENDING_PREFIX = "requests:pending:t:"
UNCLAIMED_INDEX = "requests:unclaimed"
WAKE_TTL_SECONDS = 60
PROGRESS_WAKE = "progress"
# Wake-ups are published on `wake_channel()`: `<id>` when a request ends, `<id> progress` on
# a k-of-n vote. Each api process subscribes once and wakes its own long polls (wakeups.py).
WAKE_CHANNEL = "req:wakes"
TOKEN_BYTES = 24  # the poll token: 192 bits
ID_BYTES = 16  # the request id: 128 bits (DESIGN §5), short because Redis holds it three times

Status = Literal["pending", "ready", "denied", "failed"]
PollStatus = Literal["pending", "ready", "denied", "failed", "gone", "bad_token"]


def request_key(request_id: str) -> str:
    """The Redis hash of one request."""
    return f"req:{request_id}"


def wake_key(request_id: str) -> str:
    """The list the release before's long polls block on (BLPOP).

    Still pushed by the scripts that end a request, so an api process of the release
    before wakes during a rolling upgrade; nothing of this release reads it (issue #14).
    """
    return f"req:{request_id}:wake"


def poll_rate_key(request_id: str) -> str:
    """Set while a short poll must not come again (RFC 8628 slow_down)."""
    return f"req:{request_id}:poll"


def ip_pending_key(ip: str) -> str:
    """How many undecided requests one client IP holds (the per-IP cap).

    Counted down exactly when the request leaves the pending index: decided,
    cancelled, or (expired undecided) pruned by the next sweep; deleted at zero.
    No TTL of its own, so it costs no expiry entry (issue #14).
    """
    return f"ip:{ip}:n"


def waiter_key(request_id: str) -> str:
    """Who holds the long poll of a request: a newer wait replaces an older one."""
    return f"req:{request_id}:waiter"


def votes_key(request_id: str) -> str:
    """Redis hash of a request's MACed k-of-n votes (approver id → {selection, mac, passkey})."""
    return f"req:{request_id}:votes"


def tenant_pending_key(tenant_id: str) -> str:
    """One workspace's undecided requests, `<id> <ip>` scored by expiry (issues #14, #15).

    The only index of a pending request: the inbox lists it, the sweep prunes it (and
    counts the address down), redrive walks it. No context or ciphertext; no TTL of its
    own, so an expired entry cannot vanish before the sweep counts its address down.
    """
    return f"{TENANT_PENDING_PREFIX}{tenant_id}"


def legacy_tenant_pending_key(tenant_id: str) -> str:
    """The previous release's inbox index of a workspace (ids only, with a TTL): read only."""
    return f"{LEGACY_TENANT_PENDING_PREFIX}{tenant_id}"


def view_key(request_id: str) -> str:
    """What only the approval page reads: bundle hint, template keys and CLI context (JSON)."""
    return f"req:{request_id}:v"


# The hash's fields: status, CLI public key, tenant id, workspace slug, lifetime, expires at,
# poll-token hash, integrity MAC, client IP; then, as the request moves on,
# approval JSON, approval MAC, ciphertext, failure message, who denied, unclaimed member.
# Who decided is stored once per decision kind: a denial's `by`, or the approval's JSON
# (`a`, under its MAC); a delivered request repeats it in `um`, the unclaimed index's
# member, kept whole because the take and cancel scripts must remove it byte for byte.
FIELDS = {
    "s": "status",
    "pub": "cli_pub",
    "tid": "tenant_id",
    "ws": "workspace",
    "ttl": "seconds it lives (created = exp - ttl)",
    "exp": "expires_at",
    "pth": "poll_token_hash",
    "mac": "mac",
    "ip": "client_ip",
    "a": "approval",
    "am": "approval_mac",
    "ct": "ciphertext",
    "msg": "message",
    "by": "decided_by",
    "um": "unclaimed_member",
}


def hash_poll_token(token: str) -> str:
    """Only this hash is stored: a Redis reader cannot take deliveries (SHA-256, base64url)."""
    digest = hashlib.sha256(token.encode("utf-8")).digest()[:16]  # 128 bits suffice
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class Approval:
    """An accepted approval as the api records it and the worker carries it out.

    `to_json` is canonical (sorted keys, no spaces): the integrity MAC covers exactly it.
    `decided_by` is the approver (a user id, or a workload's, token's or grant's prefixed
    id); its JSON key stays `user_id`, so records and MACs made before the rename hold.
    """

    tenant_id: str
    decided_by: str
    bundle_id: str
    include_keys: tuple[str, ...]
    approved_at: float
    via: str = ""  # a workload's approval: the workload's label (issue #16), MACed with the rest
    # issue #20: canonical JSON of the passkey proof (envcat.core.passkeys.PasskeyProof), or ""
    passkey: str = ""
    break_glass: str = ""  # issue #17: an owner's reason for releasing alone, past the rules

    def to_json(self) -> str:
        """Canonical JSON of the approval (`via`, `passkey` only when set: old MACs hold)."""
        data: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "user_id": self.decided_by,
            "bundle_id": self.bundle_id,
            "include_keys": list(self.include_keys),
            "approved_at": repr(self.approved_at),
        }
        if self.via:  # absent for people: their records (and MACs) are unchanged
            data["via"] = self.via
        if self.passkey:
            data["passkey"] = self.passkey
        if self.break_glass:
            data["break_glass"] = self.break_glass
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Approval:
        """Parse what `to_json` wrote; ValueError when it is not that shape."""
        data = json.loads(text)
        try:
            return cls(
                tenant_id=str(data["tenant_id"]),
                decided_by=str(data["user_id"]),
                bundle_id=str(data["bundle_id"]),
                include_keys=tuple(str(name) for name in data["include_keys"]),
                approved_at=float(data["approved_at"]),
                via=str(data.get("via") or ""),
                passkey=str(data.get("passkey") or ""),
                break_glass=str(data.get("break_glass") or ""),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError("not an approval record") from exc


@dataclass(frozen=True)
class AccessRequest:
    """A request as the approval page and the api see it."""

    id: str
    status: Status
    cli_pub: str
    tenant_id: str
    workspace: str
    user_code: str
    context: dict[str, Any]
    template_keys: list[str]
    bundle: str | None
    bundle_id: str | None
    created: float
    expires_at: float
    poll_token_hash: str = ""
    mac: str = ""  # integrity MAC over the fields the worker relies on (services.integrity)
    decided_by: str | None = None  # who denied it, or the approval's `decided_by`
    approval: Approval | None = None  # recorded by mark_approved
    approval_mac: str = ""

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
    tenant_id: str | None = None
    approval: Approval | None = None
    votes: int = 0  # pending: how many k-of-n votes are recorded
    replaced: bool = False  # pending for this poll: a newer long poll holds the request

    @property
    def has_votes(self) -> bool:
        """Pending with k-of-n votes recorded."""
        return self.votes > 0


# KEYS: req hash, ip counter, view, workspace index, workspace directory. ARGV: ttl, cap,
# index score (expiry, whole seconds rounded up), index member ("<id> <ip>"), view JSON,
# tenant id, then field/value pairs.
_CREATE = """
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
local earliest = redis.call('ZSCORE', KEYS[5], ARGV[6])
if not earliest or tonumber(earliest) > tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[6])
end
return 1
"""


@dataclass(frozen=True)
class NewRequest:
    """A request about to be stored: its id, poll token and the hash its MAC covers."""

    id: str
    poll_token: str
    poll_token_hash: str
    created: float
    expires_at: float


def new_request(ttl: int) -> NewRequest:
    """Fresh random id and poll token (192 bits each) for a request that lives `ttl` seconds."""
    poll_token = secrets.token_urlsafe(TOKEN_BYTES)
    now = round(time.time(), 3)  # stored to the millisecond: what `get` reads back is equal
    return NewRequest(
        id=secrets.token_urlsafe(ID_BYTES),
        poll_token=poll_token,
        poll_token_hash=hash_poll_token(poll_token),
        created=now,
        expires_at=round(now + ttl, 3),
    )


def create(
    r: redis.Redis,
    new: NewRequest,
    *,
    ttl: int,
    cli_pub: str,
    tenant_id: str,
    workspace: str,
    mac: str,
    client_ip: str,
    max_per_ip: int,
    bundle: str | None = None,
    bundle_id: str | None = None,
    template_keys: list[str] | None = None,
    context: dict[str, Any] | None = None,
) -> AccessRequest | None:
    """Store a new pending request; None when `client_ip` already holds `max_per_ip`."""
    request = AccessRequest(
        id=new.id,
        status="pending",
        cli_pub=cli_pub,
        tenant_id=tenant_id,
        workspace=workspace,
        user_code=user_code(new.id, cli_pub),
        context=context or {},
        template_keys=template_keys or [],
        bundle=bundle,
        bundle_id=bundle_id,
        created=new.created,
        expires_at=new.expires_at,
        poll_token_hash=new.poll_token_hash,
        mac=mac,
    )
    fields: dict[str, str] = {
        "s": "pending",
        "pub": cli_pub,
        "tid": tenant_id,
        "ws": workspace,
        "ttl": str(ttl),  # created = expires_at - ttl; the user code is derived from the id
        "exp": f"{new.expires_at:.3f}",
        "pth": new.poll_token_hash,
        "mac": mac,
        "ip": client_ip,
    }
    # positional, not an object: field names would cost a size class (issue #14)
    shown = [_clip(str(request.context.get(name) or "")) for name in CONTEXT_FIELDS]
    view: list[Any] = [bundle or "", bundle_id or "", request.template_keys, shown]
    # set by the api, never from the CLI's body: workload (#16), requester and kind (#16, #17)
    extra = [_clip(str(request.context.get(name) or "")) for name in SERVER_FIELDS]
    while extra and not extra[-1]:
        extra.pop()
    view.extend(extra)
    pairs = [item for pair in fields.items() for item in pair]
    keys = [request_key(new.id), ip_pending_key(client_ip), view_key(new.id)]
    keys += [tenant_pending_key(tenant_id), PENDING_TENANTS]
    # whole seconds, rounded up: an integer score is compact, and it never sorts before expiry
    score = math.ceil(new.expires_at)
    member = pending_member(new.id, client_ip)
    view_json = json.dumps(view, separators=(",", ":"), ensure_ascii=False)
    args: list[str | int] = [ttl, max_per_ip, score, member, view_json, tenant_id]
    return request if _eval(r, _CREATE, 5, *keys, *args, *pairs) else None


# The CLI context as stored in the view, by position (DESIGN §5's `context` object).
CONTEXT_FIELDS = ("hostname", "cwd", "command", "git_remote", "client")
# The context's "workload" (issue #16) is set by the api from a verified ID token, never from
# the CLI's body; stored as the view's fifth element, only when present.
WORKLOAD_FIELD = "workload"
# After it, by position and only when set: the signed-in requester's user id and email, and
# the request's kind ("login" for `envcat login`; issues #16, #17).
REQUESTER_ID_FIELD, REQUESTER_FIELD, KIND_FIELD = "requester_id", "requester", "kind"
SERVER_FIELDS = (WORKLOAD_FIELD, REQUESTER_ID_FIELD, REQUESTER_FIELD, KIND_FIELD)
_NO_VIEW: list[Any] = ["", "", [], []]
# Each context field is display-only: clipped to this many UTF-8 bytes in Redis, so the
# largest request stays under 4 KB (issue #12; docs/performance.md).
CONTEXT_FIELD_BYTES = 200


def _clip(text: str) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= CONTEXT_FIELD_BYTES:
        return text
    return raw[: CONTEXT_FIELD_BYTES - 3].decode("utf-8", "ignore") + "…"


def _context(shown: list[str], extra: list[str]) -> dict[str, Any]:
    context = {name: value for name, value in zip(CONTEXT_FIELDS, shown, strict=False) if value}
    context.update(
        {name: value for name, value in zip(SERVER_FIELDS, extra, strict=False) if value}
    )
    return context


def get(r: redis.Redis, request_id: str) -> AccessRequest | None:
    """Return the request, or None when unknown, expired or already delivered."""
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(request_key(request_id))
    pipe.get(view_key(request_id))
    data, view_text = pipe.execute()
    if not data or float(data.get("exp", "0")) <= time.time():
        return None
    bundle, bundle_id, template_keys, context, *extra = (
        json.loads(view_text) if view_text else _NO_VIEW
    )
    approval = data.get("a")
    recorded = Approval.from_json(approval) if approval else None
    return AccessRequest(
        id=request_id,
        status=data["s"],
        cli_pub=data["pub"],
        tenant_id=data.get("tid", ""),
        workspace=data.get("ws", ""),
        user_code=user_code(request_id, data["pub"]),
        context=_context(context, extra),
        template_keys=template_keys,
        bundle=bundle or None,
        bundle_id=bundle_id or None,
        created=round(float(data["exp"]) - int(data["ttl"]), 3),
        expires_at=float(data["exp"]),
        poll_token_hash=data.get("pth", ""),
        mac=data.get("mac", ""),
        decided_by=data.get("by") or (recorded.decided_by if recorded else None),
        approval=recorded,
        approval_mac=data.get("am", ""),
    )


# Lua helpers every script that takes a request out of the pending indexes shares.
INDEX_HELPERS = f"""
local function count_down(ip)
  if ip == '' then return end
  local counter = 'ip:' .. ip .. ':n'
  if redis.call('DECR', counter) <= 0 then redis.call('DEL', counter) end
end
local function reindex(index, tid)
  -- the directory scores a workspace by its earliest expiry; one with none leaves it
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if first[1] then redis.call('ZADD', '{PENDING_TENANTS}', first[2], tid)
  else redis.call('ZREM', '{PENDING_TENANTS}', tid) end
end
"""

LEAVE_PENDING = (
    INDEX_HELPERS
    + f"""
local function leave_pending(h, legacy_index)
  -- Out of its workspace's index once; only then is its address's counter counted down.
  -- A request made by the release before sits in the legacy indexes instead (issue #14).
  local id = string.sub(h, 5)
  local ip = redis.call('HGET', h, 'ip') or ''
  local member = id .. ' ' .. ip
  local counted = redis.call('ZREM', legacy_index, member)
  local tid = redis.call('HGET', h, 'tid')
  if tid then
    redis.call('ZREM', '{LEGACY_TENANT_PENDING_PREFIX}' .. tid, id)
    local index = '{TENANT_PENDING_PREFIX}' .. tid
    if redis.call('ZREM', index, member) == 1 then
      counted = 1
      reindex(index, tid)
    end
  end
  if counted == 1 then count_down(ip) end
end
"""
)

# KEYS: req hash, wake list, pending index, unclaimed index, waiter, votes. ARGV: token
# hash, holder ('' for none), mode, hold seconds. Mode 'hold': a long poll's first take,
# which names `holder` the request's one long poll while it is pending; 'held': a woken
# poll's take, refused ('replaced') when a newer poll holds the request (issue #14: one
# round trip each, where the take and the holder's SET or GET were two).
_TAKE = (
    LEAVE_PENDING
    + """
local h = KEYS[1]
if ARGV[3] == 'held' then
  local holder = redis.call('GET', KEYS[5])
  if holder and holder ~= ARGV[2] then return {'replaced'} end
end
if redis.call('EXISTS', h) == 0 then return {'gone'} end
if redis.call('HGET', h, 'pth') ~= ARGV[1] then return {'bad_token'} end
local status = redis.call('HGET', h, 's')
if status == 'pending' then
  if ARGV[3] == 'hold' then redis.call('SET', KEYS[5], ARGV[2], 'EX', ARGV[4]) end
  return {'pending', redis.call('HLEN', KEYS[6])}
end
local f = redis.call('HMGET', h, 'ct', 'msg', 'tid', 'a', 'um')
leave_pending(h, KEYS[3])
redis.call('DEL', h, h .. ':v')
if f[5] then redis.call('ZREM', KEYS[4], f[5]) end
return {status, f[1] or '', f[2] or '', f[3] or '', f[4] or ''}
"""
)

# KEYS: req hash, wake list, pending index, unclaimed index. ARGV: new status, json of
# fields to set, unclaimed member ('' for none), wake TTL, '1' to refuse a request whose
# approval is already being carried out, wake channel, request id.
_FINISH = (
    LEAVE_PENDING
    + """
local h = KEYS[1]
if redis.call('HGET', h, 's') ~= 'pending' then return 0 end
if ARGV[5] == '1' and redis.call('HEXISTS', h, 'a') == 1 then return 0 end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', h, k, v) end
redis.call('HSET', h, 's', ARGV[1])
leave_pending(h, KEYS[3])
if ARGV[3] ~= '' then
  redis.call('HSET', h, 'um', ARGV[3])
  redis.call('ZADD', KEYS[4], redis.call('HGET', h, 'exp'), ARGV[3])
end
redis.call('LPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"""
)

# KEYS: req hash, wake list, pending index, unclaimed index. ARGV: token hash, wake TTL,
# wake channel, request id.
_CANCEL = (
    LEAVE_PENDING
    + """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return {'gone', '', ''} end
if redis.call('HGET', h, 'pth') ~= ARGV[1] then return {'bad_token', '', ''} end
local f = redis.call('HMGET', h, 'a', 'um', 'tid')
leave_pending(h, KEYS[3])
redis.call('DEL', h, h .. ':v')
if f[2] then redis.call('ZREM', KEYS[4], f[2]) end
redis.call('LPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {'cancelled', f[1] or '', f[3] or ''}
"""
)

# KEYS: req hash. ARGV: approval json, its MAC.
_APPROVE = """
local h = KEYS[1]
if redis.call('HGET', h, 's') ~= 'pending' then return 0 end
if redis.call('HEXISTS', h, 'a') == 1 then return 0 end
redis.call('HSET', h, 'a', ARGV[1], 'am', ARGV[2])
return 1
"""

# KEYS: req hash.
_RELEASE_APPROVAL = """
local h = KEYS[1]
if redis.call('HGET', h, 's') ~= 'pending' then return 0 end
return redis.call('HDEL', h, 'a', 'am')
"""


def _keys(request_id: str) -> list[str]:
    return [request_key(request_id), wake_key(request_id), PENDING_INDEX, UNCLAIMED_INDEX]


_SHAS: dict[str, str] = {}  # script text -> SHA-1, computed once per process


def _eval(r: redis.Redis, script: str, numkeys: int, *keys_and_args: str | int | float) -> Any:
    """Run a script by its SHA-1 (EVALSHA), loading it on the first NOSCRIPT: the script's
    text crosses the network once per Redis, not once per call (issue #14)."""
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(
            script.encode("utf-8"), usedforsecurity=False
        ).hexdigest()
    try:
        return r.evalsha(sha, numkeys, *keys_and_args)
    except redis.exceptions.NoScriptError:
        return r.eval(script, numkeys, *keys_and_args)


def take(
    r: redis.Redis, request_id: str, poll_token: str, *, hold: Hold | None = None
) -> PollResult:
    """Look at a request as its CLI; a final state is returned once and deleted atomically.

    With `hold`, a long poll's take also claims the request while pending, or (after a
    wake-up) takes nothing when a newer poll has claimed it (`replaced`).
    """
    keys = [*_keys(request_id), waiter_key(request_id), votes_key(request_id)]
    token_hash = hash_poll_token(poll_token)
    if hold is None:
        reply: list[Any] = _eval(r, _TAKE, 6, *keys, token_hash, "", "", 0)
    else:
        mode = "held" if hold.woken else "hold"
        reply = _eval(r, _TAKE, 6, *keys, token_hash, hold.holder, mode, hold.seconds)
    status = reply[0]
    if status == "replaced":
        return PollResult(status="pending", replaced=True)
    if status == "pending":
        return PollResult(status="pending", votes=int(reply[1]))
    if status in ("gone", "bad_token"):
        return PollResult(status=status)
    ciphertext, message, tenant_id, approval = reply[1:5]
    return PollResult(
        status=status,
        ciphertext=ciphertext or None,
        message=message or None,
        tenant_id=tenant_id or None,
        approval=Approval.from_json(approval) if approval else None,
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
    done = _eval(
        r,
        _FINISH,
        4,
        *_keys(request_id),
        status,
        json.dumps(fields),
        unclaimed_member,
        WAKE_TTL_SECONDS,
        "1" if unless_approved else "",
        wake_channel(r),
        request_id,
    )
    return bool(done)


@dataclass(frozen=True)
class Unclaimed:
    """A delivered request's entry in the unclaimed index: what the sweep audits once the
    request expired uncollected (its hash is gone by then, so the entry carries it).

    `to_json` is the index member, byte for byte what earlier releases wrote: the same
    text is ZREMed by the scripts (kept in the hash as `um`) and read back by `from_json`.
    """

    request_id: str
    tenant_id: str
    decided_by: str
    bundle_id: str

    @classmethod
    def of(cls, request_id: str, approval: Approval) -> Unclaimed:
        """The entry of a request delivered under `approval`."""
        return cls(request_id, approval.tenant_id, approval.decided_by, approval.bundle_id)

    def to_json(self) -> str:
        """The index member (sorted keys; the approver under its stored key `user_id`)."""
        data = {
            "id": self.request_id,
            "tenant_id": self.tenant_id,
            "user_id": self.decided_by,
            "bundle_id": self.bundle_id,
        }
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Unclaimed:
        """Parse an index member written by `to_json`."""
        data = json.loads(text)
        return cls(data["id"], data["tenant_id"], data["user_id"], data["bundle_id"])


def mark_ready(r: redis.Redis, request_id: str, *, ciphertext_b64: str, approval: Approval) -> bool:
    """Store the sealed payload and wake waiters; False if no longer pending."""
    member = Unclaimed.of(request_id, approval).to_json()
    fields = {"ct": ciphertext_b64, "a": approval.to_json()}
    return _finish(r, request_id, "ready", fields, member)


def mark_denied(r: redis.Redis, request_id: str, *, denied_by: str) -> bool:
    """Record a refusal and wake waiters; False if no longer pending or already approved."""
    return _finish(r, request_id, "denied", {"by": denied_by}, unless_approved=True)


def mark_approved(r: redis.Redis, request_id: str, *, approval: Approval, mac: str) -> bool:
    """Record that an approval is being carried out; False if decided or approved already.

    The request stays `pending` for its CLI until the worker marks it ready or
    failed; a second approval or a denial is refused from now on.
    """
    return bool(_eval(r, _APPROVE, 1, request_key(request_id), approval.to_json(), mac))


def release_approval(r: redis.Redis, request_id: str) -> None:
    """Undo `mark_approved` while the request is still pending (its audit write failed)."""
    _eval(r, _RELEASE_APPROVAL, 1, request_key(request_id))


def mark_failed(r: redis.Redis, request_id: str, *, message: str) -> bool:
    """Record that an approval could not be carried out; False if no longer pending."""
    return _finish(r, request_id, "failed", {"msg": message})


@dataclass(frozen=True)
class Cancellation:
    """What a cancel did; `approval` is the recorded approval when there was one."""

    outcome: Literal["cancelled", "gone", "bad_token"]
    tenant_id: str | None = None
    approval: Approval | None = None


def cancel_request(r: redis.Redis, request_id: str, poll_token: str) -> Cancellation:
    """Delete a request on behalf of its CLI (Ctrl-C), reporting any approval it had."""
    reply: list[str] = _eval(
        r,
        _CANCEL,
        4,
        *_keys(request_id),
        hash_poll_token(poll_token),
        WAKE_TTL_SECONDS,
        wake_channel(r),
        request_id,
    )
    outcome, approval, tenant_id = reply
    return Cancellation(
        outcome=outcome,  # type: ignore[arg-type]  # written only by _CANCEL
        tenant_id=tenant_id or None,
        approval=Approval.from_json(approval) if approval else None,
    )


@dataclass(frozen=True)
class Hold:
    """A long poll's claim on its request: a newer wait replaces an older one (issue #12)."""

    holder: str
    seconds: int  # how long the claim lasts (the poll's timeout and a margin)
    woken: bool = False  # False: claim it now; True: take only while still the holder

    @classmethod
    def new(cls, holder: str, timeout: float) -> Hold:
        """The claim of a poll that waits `timeout` seconds."""
        return cls(holder, max(1, int(timeout) + 5))

    def after_wake(self) -> Hold:
        """The same claim, for the take after a wake-up."""
        return Hold(self.holder, self.seconds, woken=True)


def wake_channel(r: redis.Redis) -> str:
    """The wake-up channel of `r`'s database, `req:wakes:<db>`.

    Pub/Sub channels span a server's databases: two deployments sharing one Redis on
    different database numbers must not wake (and re-check) each other's long polls.
    """
    return f"{WAKE_CHANNEL}:{int(r.connection_pool.connection_kwargs.get('db') or 0)}"


def wake_with_progress(r: redis.Redis, request_id: str) -> None:
    """Wake the request's long poll to report progress (a k-of-n vote), not a final state."""
    r.publish(wake_channel(r), f"{request_id} {PROGRESS_WAKE}")


def parse_wake(message: str | bytes) -> tuple[str, str]:
    """(request id, kind) of a message on the wake channel; kind is PROGRESS_WAKE or ''."""
    text = message.decode() if isinstance(message, bytes) else message
    request_id, _, kind = text.partition(" ")
    return request_id, kind


def not_pending(r: redis.Redis, request_ids: list[str]) -> list[str]:
    """Those of `request_ids` that are final or gone (one pipelined round trip)."""
    pipe = r.pipeline(transaction=False)
    for request_id in request_ids:
        pipe.hget(request_key(request_id), "s")
    states = pipe.execute()
    return [rid for rid, s in zip(request_ids, states, strict=True) if s != "pending"]


def is_polling_too_fast(r: redis.Redis, request_id: str, interval: int) -> bool:
    """True when a short poll comes sooner than `interval` after the previous one."""
    first = r.set(poll_rate_key(request_id), "1", nx=True, ex=max(1, interval))
    return not first


# KEYS: legacy pending index. ARGV: member ("<id> <ip>").
_PRUNE_LEGACY = (
    INDEX_HELPERS
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
count_down(string.match(ARGV[1], ' (.*)$') or '')
return 1
"""
)

# KEYS: a workspace's index. ARGV: now, limit, tenant id. Returns the ids removed.
_PRUNE = (
    INDEX_HELPERS
    + """
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local ids = {}
for _, member in ipairs(members) do
  redis.call('ZREM', KEYS[1], member)
  count_down(string.match(member, ' (.*)$') or '')
  ids[#ids + 1] = string.match(member, '^[^ ]*')
end
reindex(KEYS[1], ARGV[3])
return ids
"""
)


def pending_member(request_id: str, client_ip: str) -> str:
    """The request's entry in the pending index: its id and the address it counts against."""
    return f"{request_id} {client_ip}"


def _pending_id(member: str) -> str:
    return member.split(" ", 1)[0]


def prune_pending(r: redis.Redis, now: float, limit: int) -> list[str]:
    """Remove up to `limit` expired requests from the pending indexes (and from their
    address's count); return the ids removed. Each removal is one script (ZREM decides
    in the legacy index), so concurrent sweeps handle each request once."""
    expired: list[str] = r.zrangebyscore(PENDING_INDEX, "-inf", now, start=0, num=limit)  # type: ignore[assignment]  # decode_responses
    removed = [
        _pending_id(member)
        for member in expired
        if _eval(r, _PRUNE_LEGACY, 1, PENDING_INDEX, member)
    ]
    tenants: list[str] = r.zrangebyscore(PENDING_TENANTS, "-inf", now, start=0, num=limit)  # type: ignore[assignment]
    for tenant_id in tenants:
        if len(removed) >= limit:
            break
        key = tenant_pending_key(tenant_id)
        removed += _eval(r, _PRUNE, 1, key, now, limit - len(removed), tenant_id)
    return removed


def claim_unclaimed(r: redis.Redis, now: float, limit: int) -> list[Unclaimed]:
    """Take up to `limit` approved-but-never-collected requests that have expired.

    ZREM decides the owner, so concurrent sweeps handle each one once.
    """
    members: list[str] = r.zrangebyscore(UNCLAIMED_INDEX, "-inf", now, start=0, num=limit)  # type: ignore[assignment]
    claimed = []
    for member in members:
        if r.zrem(UNCLAIMED_INDEX, member):
            claimed.append(Unclaimed.from_json(member))
    return claimed


def release_unclaimed(r: redis.Redis, entry: Unclaimed, score: float) -> None:
    """Put a claimed entry back after a failed sweep step, so the next sweep retries it."""
    r.zadd(UNCLAIMED_INDEX, {entry.to_json(): score})


def pending_of_tenant(r: redis.Redis, tenant_id: str, now: float, limit: int) -> list[str]:
    """Ids of a workspace's requests still pending at `now`, soonest expiry first (at most
    `limit`; issue #15). Expired entries are left to the sweep, which counts their
    addresses down."""
    pipe = r.pipeline(transaction=False)
    for key in (tenant_pending_key(tenant_id), legacy_tenant_pending_key(tenant_id)):
        pipe.zrangebyscore(key, now, "+inf", start=0, num=limit, withscores=True)
    current_index, legacy_index = pipe.execute()
    listed = sorted([*current_index, *legacy_index], key=lambda entry: entry[1])
    return [_pending_id(member) for member, _ in listed[:limit]]


def _pending_tenants(r: redis.Redis, limit: int = 0) -> list[str]:
    """The workspaces with pending requests (at most `limit`; 0: all)."""
    tenants: list[str] = r.zrange(PENDING_TENANTS, 0, limit - 1)  # type: ignore[assignment]  # decode_responses
    return tenants


def pending_ids(r: redis.Redis, now: float, limit: int) -> list[str]:
    """Ids of requests still pending at `now`, every workspace's (at most `limit`)."""
    pipe = r.pipeline(transaction=False)
    pipe.zrangebyscore(PENDING_INDEX, now, "+inf", start=0, num=limit)
    for tenant_id in _pending_tenants(r, limit):
        pipe.zrangebyscore(tenant_pending_key(tenant_id), now, "+inf", start=0, num=limit)
    members = [member for listed in pipe.execute() for member in listed]
    return [_pending_id(member) for member in members[:limit]]


def pending_count(r: redis.Redis) -> int:
    """Requests still waiting for a decision (for the dashboard and metrics)."""
    now = time.time()
    pipe = r.pipeline(transaction=False)
    pipe.zcount(PENDING_INDEX, now, "+inf")
    for tenant_id in _pending_tenants(r):
        pipe.zcount(tenant_pending_key(tenant_id), now, "+inf")
    return sum(int(count) for count in pipe.execute())
