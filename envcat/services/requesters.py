"""Who may request each bundle (issue #17): anyone with the link, or members only.

"anyone" (no row, the default) is the behaviour before this rule: any terminal that
knows the workspace may ask and a person decides. "members" releases the bundle only
to a request made by a terminal signed in with `envcat login` (the request's
requester, set by the api from the user token, never from the body) as a live member
of the workspace; any role counts, viewers included, since asking decides nothing.

The rule is enforced where the bundle is chosen, at approval (`require`): an anonymous
request cannot be approved from a members-only bundle, whoever approves. A request
that names such a bundle up front is refused at creation already (`refuse_early`), so
the CLI says so before it shows a link. Standing decisions of the admins (a workload
trust policy, a service token) are not requests by a person and pass; a device grant
on a members-only bundle is made only for a signed-in requester and delivers only to
a later request of the same requester (`grant_applies`). An owner's break-glass is an
explicit override: it passes and its audit event says `requesters_overridden`.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import select

from envcat.core.schemas.requesters import Requesters, RequestersRule
from envcat.models import Bundle, BundleRequesters, DeviceGrant, Membership, User, db
from envcat.services.access_requests import store
from envcat.services.errors import Forbidden
from envcat.services.tenancy import Actor, get_bundle
from envcat.services.transactions import transaction

ANYONE: Final = "anyone"
MEMBERS: Final = "members"
ADVICE = "ask the requester to run `envcat login` and ask again"


class MembersOnly(Forbidden):
    """A request not made by a signed-in member, for a members-only bundle."""

    code = "members_only"


def rule_of(tenant_id: str, bundle_id: str) -> Requesters:
    """The bundle's rule: "anyone" (the default) or "members"."""
    row = db.session.get(BundleRequesters, bundle_id)
    is_members = row is not None and row.tenant_id == tenant_id and row.requesters == MEMBERS
    return MEMBERS if is_members else ANYONE


def describe(tenant_id: str, bundle_id: str) -> RequestersRule:
    """GET /bundles/{id}/requesters (any member)."""
    get_bundle(tenant_id, bundle_id)
    return RequestersRule(requesters=rule_of(tenant_id, bundle_id))


def set_rule(actor: Actor, bundle_id: str, body: RequestersRule) -> RequestersRule:
    """Replace the rule (admin+ who may edit the bundle, checked by the view); audited."""
    get_bundle(actor.tenant_id, bundle_id)
    with transaction():
        row = db.session.get(BundleRequesters, bundle_id)
        if row is None:
            row = BundleRequesters(bundle_id=bundle_id, tenant_id=actor.tenant_id)
            db.session.add(row)
        before = row.requesters or ANYONE
        row.requesters = body.requesters
        row.updated_by = actor.user_id
        actor.append(
            "bundle.requesters_changed",
            bundle_id,
            details={"bundle_id": bundle_id, "requesters": body.requesters, "before": before},
        )
    return body


def is_member(tenant_id: str, user_id: object) -> bool:
    """Whether `user_id` is a live member (any role) of the workspace."""
    if not isinstance(user_id, str) or not user_id:
        return False
    found = db.session.execute(
        select(Membership.user_id)
        .join(User, User.id == Membership.user_id)
        .where(
            Membership.tenant_id == tenant_id,
            Membership.user_id == user_id,
            User.deleted_at.is_(None),
        )
    ).first()
    return found is not None


def member_requester(request: store.AccessRequest) -> str | None:
    """The request's requester when they are a live member of its workspace, else None."""
    requester = request.context.get(store.REQUESTER_ID_FIELD)
    return requester if is_member(request.tenant_id, requester) else None


def refuses(
    tenant_id: str, bundle_id: str, request: store.AccessRequest, rule: Requesters | None = None
) -> bool:
    """Whether the bundle's rule (`rule`, when the caller has read it) refuses this
    request (break-glass passes over it)."""
    rule = rule_of(tenant_id, bundle_id) if rule is None else rule
    return rule == MEMBERS and member_requester(request) is None


def require(
    tenant_id: str, bundle_id: str, request: store.AccessRequest, rule: Requesters | None = None
) -> None:
    """MembersOnly (403) when the bundle releases to members only and nobody signed in asked."""
    if refuses(tenant_id, bundle_id, request, rule):
        raise MembersOnly(
            "This bundle only releases to signed-in members of the workspace, and this "
            f"request comes from a terminal that is not signed in; {ADVICE}."
        )


def refuse_early(
    tenant_id: str, bundle: str | None, bundle_id: str | None, requester_id: str | None
) -> None:
    """At creation: MembersOnly when the named bundle is members-only and nobody signed in.

    A name or id that is not one of the workspace's bundles passes (a person decides;
    the approval checks the bundle actually chosen).
    """
    if requester_id is not None or not (bundle or bundle_id):
        return
    query = select(BundleRequesters.requesters).join(
        Bundle, Bundle.id == BundleRequesters.bundle_id
    )
    query = query.where(Bundle.tenant_id == tenant_id, BundleRequesters.tenant_id == tenant_id)
    query = query.where(Bundle.id == bundle_id) if bundle_id else query.where(Bundle.name == bundle)
    if db.session.execute(query).scalar() == MEMBERS:
        raise MembersOnly(
            "This bundle only releases to members of the workspace signed in on this "
            "terminal; run `envcat login`, then ask again."
        )


def grant_applies(grant: DeviceGrant, requester_id: str | None) -> bool:
    """Whether a device grant may deliver to a request of `requester_id` (None: anonymous).

    On a members-only bundle the grant must have been made for a signed-in requester and
    the new request must come from the same person, still a member.
    """
    if rule_of(grant.tenant_id, grant.bundle_id) != MEMBERS:
        return True
    return (
        grant.requester_id is not None
        and grant.requester_id == requester_id
        and is_member(grant.tenant_id, requester_id)
    )
