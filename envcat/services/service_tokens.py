"""Service tokens (issue #16): bearer tokens for CI where OIDC is unavailable.

A token is `ect_<prefix>_<secret>`: shown once at creation; the database keeps the
prefix (to find the row) and the SHA-256 of the whole token, compared in constant
time. It releases the keys it names (empty = all) of one bundle of its workspace,
until it expires or is revoked, at most SERVICE_TOKEN_RATE_LIMIT times a minute;
every use is audited and stamps `last_used_at`. A token that is unknown, revoked,
expired or of another workspace gets the same 401, so none of that leaks.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select

from envcat.core import wire
from envcat.core.schemas.workloads import (
    ServiceTokenCreate,
    ServiceTokenCreated,
    ServiceTokenList,
    ServiceTokenOut,
)
from envcat.models import Bundle, ServiceToken, db, utcnow
from envcat.services import bundles, workloads
from envcat.services.errors import (
    InvalidServiceToken,
    NotFound,
    RateLimited,
    ValidationFailed,
    WorkloadNotAllowed,
)
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc
from envcat.services.transactions import transaction
from envcat.services.workload_access import WorkloadGrant

TOKEN_RE = re.compile(r"ect_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
APPROVER_PREFIX = wire.SERVICE_TOKEN_APPROVER_PREFIX
REFUSED = "The service token is unknown, revoked, expired or not for this workspace."


def hash_token(token: str) -> str:
    """The stored form of a bearer token: SHA-256, hex (user tokens use it too)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def mint(scheme: str) -> tuple[str, str]:
    """A fresh `<scheme>_<prefix>_<secret>` bearer token and its lookup prefix."""
    prefix = secrets.token_hex(6)
    return f"{scheme}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def matches(stored_hash: str, token: str) -> bool:
    """Whether `token` hashes to `stored_hash` (constant time)."""
    return hmac.compare_digest(stored_hash, hash_token(token))


def _out(row: ServiceToken, bundle_name: str | None) -> ServiceTokenOut:
    return ServiceTokenOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        bundle_id=row.bundle_id,
        bundle_name=bundle_name,
        keys=list(row.keys),
        scopes=list(row.scopes),
        created_by=row.created_by,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        last_used_at=as_utc(row.last_used_at) if row.last_used_at else None,
        revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
    )


def create_token(actor: Actor, body: ServiceTokenCreate) -> ServiceTokenCreated:
    """Make a token (audited); the reply is the only place it appears.

    The view lets admins and owners only; the schema keeps `admin` alone and bundle-less.
    """
    limit = current().settings.service_token_max_days
    if body.expires_in_days > limit:
        raise ValidationFailed(f"A service token lives at most {limit} days on this server.")
    token, prefix = mint("ect")
    with transaction("Could not make a unique token; retry."):
        bundle_name = (
            None
            if body.bundle_id is None
            else workloads.check_keys(actor.tenant_id, body.bundle_id, body.keys)
        )
        row = ServiceToken(
            tenant_id=actor.tenant_id,
            name=body.name,
            prefix=prefix,
            token_hash=hash_token(token),
            bundle_id=body.bundle_id,
            keys=list(dict.fromkeys(body.keys)),
            scopes=sorted(set(body.scopes)),
            created_by=actor.user_id,
            expires_at=utcnow() + timedelta(days=body.expires_in_days),
        )
        db.session.add(row)
        db.session.flush()  # the id the event names
        details = {
            "name": row.name,
            "prefix": prefix,
            "bundle_id": row.bundle_id,
            "keys": list(row.keys),
            "scopes": list(row.scopes),
            "expires_at": as_utc(row.expires_at).isoformat(),
        }
        actor.append("service_token.created", f"service_token:{row.id}", details)
    return ServiceTokenCreated(**_out(row, bundle_name).model_dump(), token=token)


def list_tokens(tenant_id: str) -> ServiceTokenList:
    """The tenant's tokens, newest first (never the tokens themselves)."""
    rows = db.session.execute(
        select(ServiceToken, Bundle.name)
        .outerjoin(Bundle, Bundle.id == ServiceToken.bundle_id)
        .where(ServiceToken.tenant_id == tenant_id)
        .order_by(ServiceToken.created_at.desc())
    ).all()
    return ServiceTokenList(items=[_out(row, name) for row, name in rows])


def revoke_token(actor: Actor, token_id: str) -> None:
    """Revoke a token at once (audited); revoking twice is harmless."""
    with transaction():
        row = db.session.execute(
            select(ServiceToken).where(
                ServiceToken.id == token_id, ServiceToken.tenant_id == actor.tenant_id
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("No such service token.")
        already = row.revoked_at is not None
        row.revoked_at = row.revoked_at or utcnow()
        if not already:
            details = {"name": row.name, "prefix": row.prefix}
            actor.append("service_token.revoked", f"service_token:{token_id}", details)


def find_usable(token: str, tenant_id: str | None = None) -> ServiceToken:
    """The live token row (of `tenant_id` when given); InvalidServiceToken (401) otherwise."""
    match = TOKEN_RE.fullmatch(token)
    if match is None:
        raise InvalidServiceToken(REFUSED)
    row = db.session.execute(
        select(ServiceToken).where(ServiceToken.prefix == match.group(1))
    ).scalar_one_or_none()
    if row is None or not matches(row.token_hash, token):
        raise InvalidServiceToken(REFUSED)
    if (tenant_id is not None and row.tenant_id != tenant_id) or row.revoked_at is not None:
        raise InvalidServiceToken(REFUSED)
    if as_utc(row.expires_at) <= utcnow():
        raise InvalidServiceToken(REFUSED)
    return row


def throttle(bucket: str, limit: int, who: str) -> None:
    """Count one call of `bucket` this minute; 429 past `limit` (`who` opens the message)."""
    window = int(time.time() // 60)
    key = f"{bucket}:{window}"
    pipe = current().redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 120)
    used, _ = pipe.execute()
    if int(used) > limit:
        raise RateLimited(f"{who} made more than {limit} requests this minute.", details=60)


def _throttle(row: ServiceToken) -> None:
    limit = current().settings.service_token_rate_limit
    throttle(f"stok:{row.id}", limit, "This service token")


def label(row: ServiceToken) -> str:
    """How the audit log names a token: `service-token:<name> (<prefix>)`."""
    return f"service-token:{row.name} ({row.prefix})"[:128]


def authorize_scan(token: str, *, tenant_id: str) -> tuple[str, str]:
    """(token id, audit label) of a token with the "scan" scope (401 or 403 otherwise)."""
    row = find_usable(token, tenant_id)
    if "scan" not in row.scopes:
        raise WorkloadNotAllowed(f"{label(row)} has no scan scope.")
    row.last_used_at = utcnow()
    db.session.commit()
    return row.id, label(row)


def authorize(
    token: str,
    *,
    tenant_id: str,
    bundle: str | None,
    bundle_id: str | None,
    template_keys: Sequence[str],
) -> WorkloadGrant:
    """The grant a service token gives this request (401, 403 or 429 otherwise)."""
    row = find_usable(token, tenant_id)
    _throttle(row)
    shown = label(row)
    if "release" not in row.scopes or row.bundle_id is None:
        raise WorkloadNotAllowed(f"{shown} may not receive values (no release scope).")
    bundle_name = db.session.execute(
        select(Bundle.name).where(Bundle.id == row.bundle_id)
    ).scalar_one()
    if (bundle_id is not None and bundle_id != row.bundle_id) or (
        bundle is not None and bundle != bundle_name
    ):
        raise WorkloadNotAllowed(f"{shown} may not receive bundle {bundle or bundle_id}.")
    allowed = list(row.keys) or sorted(bundles.exported_names(row.bundle_id))
    if not set(template_keys) <= set(allowed):
        raise WorkloadNotAllowed(f"{shown} may not receive the keys asked for.")
    row.last_used_at = utcnow()
    db.session.commit()
    return WorkloadGrant(
        policy_id=row.id,
        policy_name=row.name,
        mode="automatic",
        label=shown,
        bundle_id=row.bundle_id,
        bundle_name=bundle_name,
        keys=tuple(key for key in allowed if not template_keys or key in template_keys),
        approver_id=APPROVER_PREFIX + row.id,
        kind="service_token",
    )


def is_still_granted(tenant_id: str, token_id: str, bundle_id: str, keys: Sequence[str]) -> bool:
    """True while the token exists, is not revoked or expired, and allows these keys."""
    row = db.session.execute(
        select(ServiceToken).where(ServiceToken.id == token_id, ServiceToken.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None or as_utc(row.expires_at) <= utcnow():
        return False
    if row.bundle_id != bundle_id:
        return False
    return not row.keys or set(keys) <= set(row.keys)
