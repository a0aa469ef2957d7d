"""Admin service tokens (issue #16): bundles as code from CI, without a person signed in.

A service token with the `admin` scope (alone: it neither receives values nor scans)
acts through the bff as a synthetic caller `token:<id>` with the admin role in its own
workspace, exactly on the routes `envcat plan`/`apply` use
(`envcat.core.bearer_routes.is_admin_token_route`). The bff resolves the bearer with
`whoami`; every signed call made for it is checked here again (token live, scope,
route), throttled (SERVICE_TOKEN_ADMIN_RATE_LIMIT a minute), stamps `last_used_at` and
is audited as `service_token.used` with the token's name and the route. Writes are
audited by their own services under the actor `token:<id>`. A token that is unknown,
revoked, expired or of another workspace gets the same 401; one without the scope 403.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select

from envcat.core.bearer_routes import is_admin_token_route
from envcat.core.schemas.logins import WhoAmI
from envcat.core.wire import TOKEN_ACTOR_PREFIX
from envcat.models import ServiceToken, Tenant, db, utcnow
from envcat.services import audit, service_tokens
from envcat.services.errors import Forbidden, InvalidServiceToken, WorkloadNotAllowed
from envcat.services.runtime import current
from envcat.services.tenancy import as_utc
from envcat.services.transactions import transaction

ACTOR_PREFIX = TOKEN_ACTOR_PREFIX  # the synthetic caller's id prefix
SCOPE = "admin"
ROLE = "admin"


def is_token_actor(user_id: str) -> bool:
    """True for the synthetic caller id of an admin service token."""
    return user_id.startswith(ACTOR_PREFIX)


def whoami(token: str) -> WhoAmI:
    """The synthetic caller an admin token acts as (401 unusable, 403 without the scope)."""
    row = service_tokens.find_usable(token)
    if SCOPE not in row.scopes:
        raise WorkloadNotAllowed(
            f"{service_tokens.label(row)} has no admin scope: it cannot administer bundles."
        )
    slug = db.session.execute(select(Tenant.slug).where(Tenant.id == row.tenant_id)).scalar_one()
    return WhoAmI(
        user_id=ACTOR_PREFIX + row.id,
        email="",
        tenant_id=row.tenant_id,
        workspace=slug,
        role=ROLE,
        token_id=row.id,
        expires_at=as_utc(row.expires_at),
    )


def authorize_call(
    actor_id: str,
    tenant_id: str,
    *,
    method: str,
    rest: str,
    query: Collection[str],
    origin: audit.Origin,
) -> str:
    """The role of an admin token's signed call (throttled, audited); 401/403/429 otherwise.

    `rest` is the path after `/api/v1/`.
    """
    token_id = actor_id.removeprefix(ACTOR_PREFIX)
    row = db.session.execute(
        select(ServiceToken).where(ServiceToken.id == token_id, ServiceToken.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None or as_utc(row.expires_at) <= utcnow():
        raise InvalidServiceToken(service_tokens.REFUSED)
    if SCOPE not in row.scopes:
        raise WorkloadNotAllowed(f"{service_tokens.label(row)} has no admin scope.")
    if not is_admin_token_route(method, rest, query):
        raise Forbidden("An admin service token administers bundles as code only.")
    limit = current().settings.service_token_admin_rate_limit
    service_tokens.throttle(f"stok-admin:{row.id}", limit, "This admin service token")
    details = {"name": row.name, "prefix": row.prefix, "scope": SCOPE, "call": f"{method} {rest}"}
    with transaction():
        row.last_used_at = utcnow()
        audit.append(
            tenant_id,
            actor_id,
            "service_token.used",
            f"service_token:{row.id}",
            details=details,
            origin=origin,
        )
    return ROLE
