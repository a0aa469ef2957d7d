"""HMAC verification of bff → api calls (DESIGN §5) and the caller it yields."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import Blueprint, g, request
from sqlalchemy import select

from envcat.core import signing
from envcat.models import Membership, User, db
from envcat.services import admin_tokens
from envcat.services.audit import Origin
from envcat.services.errors import Forbidden, NotFound, Unauthorized
from envcat.services.runtime import current

ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}


@dataclass(frozen=True)
class Caller:
    """Who is calling, taken only from the verified signature."""

    user_id: str
    tenant_id: str
    role: str

    def require(self, role: str) -> None:
        """Raise 403 unless the caller's role is at least `role`."""
        if ROLE_RANK[self.role] < ROLE_RANK[role]:
            raise Forbidden(f"This needs the {role} role; you are {self.role}.")


def _header(name: str) -> str:
    value = request.headers.get(name)
    if not value:
        raise Unauthorized(f"Missing {name} header.")
    return value


@dataclass(frozen=True)
class Signature:
    """A call's signature headers, checked against this exact call (nothing spent yet)."""

    user_id: str
    tenant_id: str
    nonce: str


# This call's checked signature and its nonce's outcome, kept in the WSGI environ: it
# belongs to one request whatever app context the request shares (flask.g may outlive it).
_CHECKED, _SPENT = "envcat.checked_signature", "envcat.spent_call_nonce"


def call_nonce_key(nonce: str) -> str:
    """Where a signed call's nonce is spent in Redis (the client-address proofs use `nonce:ip:`)."""
    return f"nonce:{nonce}"


def checked_signature() -> Signature:
    """Check the five headers against this exact call, without Redis; raise 401 if they fail.

    Checked once per call: the client-address hook may ask before the blueprint does."""
    known: Signature | None = request.environ.get(_CHECKED)
    if known is not None:
        return known
    user_id, tenant_id = _header(signing.HEADER_USER), _header(signing.HEADER_TENANT)
    timestamp, nonce = _header(signing.HEADER_TIMESTAMP), _header(signing.HEADER_NONCE)
    signature = _header(signing.HEADER_SIGNATURE)
    if not signing.ID_PATTERN.fullmatch(user_id) or not signing.ID_PATTERN.fullmatch(tenant_id):
        raise Unauthorized("Malformed identity headers.")
    if not signing.NONCE_PATTERN.fullmatch(nonce) or not timestamp.isdigit():
        raise Unauthorized("Malformed signature headers.")
    if abs(time.time() - int(timestamp)) > signing.CLOCK_SKEW_SECONDS:
        raise Unauthorized("Signature timestamp is outside the allowed window.")
    message = signing.canonical_message(
        user_id,
        tenant_id,
        timestamp,
        nonce,
        request.method,
        request.path,
        request.query_string.decode("latin-1"),
        request.get_data(cache=True),
    )
    secret = current().settings.bff_shared_secret.get_secret_value()
    if not signing.signature_matches(secret, message, signature):
        raise Unauthorized("Bad signature.")
    checked = Signature(user_id, tenant_id, nonce)
    request.environ[_CHECKED] = checked
    return checked


def genuine_nonce() -> str | None:
    """The nonce of this call when it carries a genuine signature, else None (nothing raised)."""
    if request.headers.get(signing.HEADER_SIGNATURE) is None:
        return None
    try:
        return checked_signature().nonce
    except Unauthorized:
        return None


def note_spent(nonce: str, fresh: bool) -> None:
    """Record that `nonce` was spent for this call already, and whether it was new then."""
    request.environ[_SPENT] = (nonce, fresh)


def verify_signature() -> tuple[str, str]:
    """Check the five headers against this exact call; return (user id, tenant id)."""
    signed = checked_signature()
    # Only a correctly signed call may spend a nonce, so forgers cannot burn them. A call
    # that carried a client-address proof had its nonce spent with the proof's, in one
    # round trip (`envcat.api._adopt_client_ip`); any other call spends it here.
    spent = request.environ.get(_SPENT)
    if spent is not None and spent[0] == signed.nonce:
        fresh = bool(spent[1])
    else:
        key, ttl = call_nonce_key(signed.nonce), signing.NONCE_TTL_SECONDS
        fresh = bool(current().redis.set(key, "1", nx=True, ex=ttl))
    if not fresh:
        raise Unauthorized("Nonce already used.")
    return signed.user_id, signed.tenant_id


def authenticate_user() -> None:
    """before_request of the signed blueprint: verify, then resolve the membership."""
    user_id, tenant_id = verify_signature()
    if user_id == signing.BFF_USER_ID:
        raise Unauthorized("The bff identity may only call internal endpoints.")
    if admin_tokens.is_token_actor(user_id):  # an admin service token (issue #16)
        role = admin_tokens.authorize_call(
            user_id,
            tenant_id,
            method=request.method,
            rest=request.path.removeprefix("/api/v1/"),
            query=request.args.keys(),
            origin=Origin(ip=request.remote_addr, user_agent=request.user_agent.string or None),
        )
        g.caller = Caller(user_id=user_id, tenant_id=tenant_id, role=role)
        return
    row = db.session.execute(
        select(Membership.role, User.deleted_at)
        .join(User, User.id == Membership.user_id)
        .where(Membership.user_id == user_id, Membership.tenant_id == tenant_id)
    ).one_or_none()
    if row is None:
        # Outside the tenant its resources do not exist (never 403, which would confirm them).
        raise NotFound("Not found.")
    if row.deleted_at is not None:
        raise Unauthorized("This account has been deleted.")
    g.caller = Caller(user_id=user_id, tenant_id=tenant_id, role=row.role)


def authenticate_bff() -> None:
    """before_request of the internal blueprint: only the bff's own identity."""
    user_id, tenant_id = verify_signature()
    if user_id != signing.BFF_USER_ID or tenant_id != signing.NO_TENANT:
        raise Unauthorized("Internal endpoints take the bff identity only.")


def caller() -> Caller:
    """The verified caller of this request (set by `authenticate_user`)."""
    value: Caller = g.caller
    return value


def signed_blueprint(name: str) -> Blueprint:
    """A blueprint under /api/v1 whose every call must carry a valid user signature."""
    bp = Blueprint(name, __name__, url_prefix="/api/v1")
    bp.before_request(authenticate_user)
    return bp
