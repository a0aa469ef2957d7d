"""Requests and approvals written straight into the store, as the api would (real MACs).

For service, worker and fault tests that start below the HTTP layer. They need
an app context (the integrity MAC key comes from the runtime's keyring).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import redis

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.wire import slugify
from envcat.services import integrity
from envcat.services.access_requests import store

TEST_IP = "203.0.113.9"


def stored_request(
    r: redis.Redis,
    *,
    tenant_id: str = "t-acme",
    ttl: int = 60,
    cli_pub: str | None = None,
    client_ip: str = TEST_IP,
    **hints: Any,
) -> tuple[store.AccessRequest, str]:
    """A pending request for `tenant_id`, MACed like the api's; returns it and its poll token."""
    cli_pub = cli_pub or encode_public_key(generate_keypair())
    workspace = slugify(tenant_id) or tenant_id
    new = store.new_request(ttl)
    mac = integrity.request_mac(new, cli_pub=cli_pub, tenant_id=tenant_id, workspace=workspace)
    request = store.create(
        r,
        new,
        ttl=ttl,
        cli_pub=cli_pub,
        tenant_id=tenant_id,
        workspace=workspace,
        mac=mac,
        client_ip=client_ip,
        max_per_ip=10_000,
        **hints,
    )
    assert request is not None
    return request, new.poll_token


def record_approval(
    r: redis.Redis,
    request: store.AccessRequest,
    user_id: str,
    bundle_id: str,
    keys: Sequence[str],
    *,
    break_glass: str = "",
) -> str:
    """Record an approval as the api's approve call does; return the MAC the task carries.
    `break_glass`: an owner's reason for releasing alone past the rules (issue #17)."""
    approval = store.Approval(
        tenant_id=request.tenant_id,
        decided_by=user_id,
        bundle_id=bundle_id,
        include_keys=tuple(keys),
        approved_at=time.time(),
        break_glass=break_glass,
    )
    mac = integrity.approval_mac(request, approval)
    assert store.mark_approved(r, request.id, approval=approval, mac=mac)
    return mac


def expire_now(redis_client: redis.Redis, *request_ids: str, after: float = 2.0) -> float:
    """End these requests' lives in Redis at once (what their TTL would do, unslept).

    Every key of a request (`req:<id>`, its wake list, view, waiter…) gets an expiry in
    the past, which Redis treats as deleted. The return value is the clock `after`
    seconds on (past the 1 s TTLs tests give, short of the 60 s ones), to hand to the
    code that reads the indexes scored by expiry time (pending, unclaimed).
    """
    for request_id in request_ids:
        for key in redis_client.scan_iter(match=f"req:{request_id}*"):
            redis_client.pexpireat(key, 1)
    return time.time() + after


def as_made_before_upgrade(r: redis.Redis, request: store.AccessRequest, client_ip: str) -> None:
    """Index `request` as the release before issue #14's per-workspace index did: in the
    global pending index (`<id> <ip>` by expiry) and the inbox's ids-only workspace index."""
    member = store.pending_member(request.id, client_ip)
    r.zrem(store.tenant_pending_key(request.tenant_id), member)
    r.zrem(store.PENDING_TENANTS, request.tenant_id)
    r.zadd(store.PENDING_INDEX, {member: request.expires_at})
    legacy = store.legacy_tenant_pending_key(request.tenant_id)
    r.zadd(legacy, {request.id: math.ceil(request.expires_at)})
    r.expire(legacy, int(request.expires_at - request.created))
