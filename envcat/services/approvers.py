"""Who may approve releases of each bundle (issue #17): a minimum role and/or named users.

No rule means today's behaviour: every member, admin and owner may approve.
Viewers never approve, named or not. The rule is checked in the approve path
after the request is found to be this workspace's, so an outsider still sees
404 and a member without the right sees 403 `not_an_approver`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from envcat.core.schemas.team import ApproverOut, ApproversOut, ApproversUpdate
from envcat.models import BundleApprovers, Membership, User, db
from envcat.services.errors import Forbidden, ValidationFailed
from envcat.services.tenancy import Actor, get_bundle, transaction

ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}
DEFAULT_MIN_ROLE = "member"


class NotAnApprover(Forbidden):
    """A member whom the bundle's rule does not allow to approve it."""

    code = "not_an_approver"


@dataclass(frozen=True)
class Rule:
    """A bundle's approver rule; `min_role` None = named users only."""

    min_role: str | None
    user_ids: tuple[str, ...]
    is_default: bool

    def allows(self, user_id: str, role: str) -> bool:
        """Whether a member with `role` may approve under this rule."""
        if ROLE_RANK.get(role, 0) < ROLE_RANK["member"]:
            return False
        if user_id in self.user_ids:
            return True
        return self.min_role is not None and ROLE_RANK[role] >= ROLE_RANK[self.min_role]


def rule_of(tenant_id: str, bundle_id: str) -> Rule:
    """The bundle's rule, or the default (member and above)."""
    row = db.session.get(BundleApprovers, bundle_id)
    if row is None or row.tenant_id != tenant_id:
        return Rule(min_role=DEFAULT_MIN_ROLE, user_ids=(), is_default=True)
    return Rule(min_role=row.min_role, user_ids=tuple(row.user_ids or ()), is_default=False)


def _role(tenant_id: str, user_id: str) -> str:
    membership = db.session.get(Membership, (user_id, tenant_id))
    return membership.role if membership is not None else "viewer"


def require_approver(tenant_id: str, user_id: str, bundle_id: str) -> None:
    """Raise NotAnApprover (403) unless the member may approve this bundle."""
    rule = rule_of(tenant_id, bundle_id)
    if not rule.allows(user_id, _role(tenant_id, user_id)):
        who = (
            f"members with the {rule.min_role} role or above"
            if rule.min_role
            else "the named approvers"
        )
        if rule.min_role and rule.user_ids:
            who += " and the named approvers"
        raise NotAnApprover(f"Only {who} may approve this bundle; ask one of them.")


def eligible(tenant_id: str, bundle_id: str) -> list[tuple[str, str]]:
    """(user id, email) of every live member who may approve the bundle."""
    rule = rule_of(tenant_id, bundle_id)
    rows = db.session.execute(
        select(User.id, User.email, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == tenant_id, User.deleted_at.is_(None))
        .order_by(User.email)
    ).all()
    return [(uid, email) for uid, email, role in rows if rule.allows(uid, role)]


def describe(tenant_id: str, bundle_id: str, caller_id: str) -> ApproversOut:
    """The bundle's rule as the bundle and approval pages show it."""
    get_bundle(tenant_id, bundle_id)
    rule = rule_of(tenant_id, bundle_id)
    emails = dict(
        db.session.execute(
            select(User.id, User.email).where(User.id.in_(rule.user_ids or ("",)))
        ).all()
    )
    users = [ApproverOut(user_id=u, email=emails.get(u, u)) for u in rule.user_ids]
    return ApproversOut(
        bundle_id=bundle_id,
        min_role=rule.min_role,
        users=users,
        is_default=rule.is_default,
        can_approve=rule.allows(caller_id, _role(tenant_id, caller_id)),
    )


def _check_named(tenant_id: str, user_ids: list[str]) -> tuple[str, ...]:
    named = tuple(dict.fromkeys(user_ids))
    roles = dict(
        db.session.execute(
            select(Membership.user_id, Membership.role).where(
                Membership.tenant_id == tenant_id, Membership.user_id.in_(named or ("",))
            )
        ).all()
    )
    strangers = [u for u in named if ROLE_RANK.get(roles.get(u, ""), -1) < ROLE_RANK["member"]]
    if strangers:
        raise ValidationFailed(
            "Named approvers must be members of this workspace with the member role or above.",
            details=[{"loc": ["user_ids"], "msg": "not an eligible member", "type": "value_error"}],
        )
    return named


def set_rule(actor: Actor, bundle_id: str, body: ApproversUpdate) -> ApproversOut:
    """Replace the bundle's rule (admin+, checked by the view); audited."""
    get_bundle(actor.tenant_id, bundle_id)
    if body.min_role is None and not body.user_ids:
        raise ValidationFailed("Name at least one approver, or choose a minimum role.")
    named = _check_named(actor.tenant_id, body.user_ids)
    with transaction():
        row = db.session.get(BundleApprovers, bundle_id)
        if row is None:
            row = BundleApprovers(bundle_id=bundle_id, tenant_id=actor.tenant_id)
            db.session.add(row)
        row.min_role = body.min_role
        row.user_ids = list(named)
        row.updated_by = actor.user_id
    actor.record(
        "bundle.approvers_changed",
        bundle_id,
        details={"bundle_id": bundle_id, "min_role": body.min_role, "user_ids": list(named)},
    )
    return describe(actor.tenant_id, bundle_id, actor.user_id)
