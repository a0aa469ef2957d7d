"""Who may approve releases of each bundle (issue #17): a minimum role, named users, groups.

No rule means today's behaviour: every member, admin and owner may approve.
Viewers never approve, named or not. The rule is checked in the approve path
after the request is found to be this workspace's, so an outsider still sees
404 and a member without the right sees 403 `not_an_approver`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from envcat.core.schemas.team import ApproverOut, ApproversOut, ApproversUpdate
from envcat.models import BundleApprovers, Membership, User, db
from envcat.services import audit, groups, integrity
from envcat.services.access_requests import store
from envcat.services.errors import Conflict, EnvCatError, Forbidden, ValidationFailed
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, emails_of, get_bundle

ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}
DEFAULT_MIN_ROLE = "member"


class NotAnApprover(Forbidden):
    """A member whom the bundle's rule does not allow to approve it."""

    code = "not_an_approver"


class SelfApproval(Forbidden):
    """The requester approving their own request on a `no_self_approval` bundle (issue #17)."""

    code = "self_approval"


class AwaitingApprovals(EnvCatError):
    """Not an error: the approval was recorded and the request waits for more (k-of-n).

    Raised by `quorum` so the approve path stops before the release; the api view
    catches it and answers 202 with the count. Never reaches the error handler.
    """

    status, code = 202, "awaiting_approvals"

    def __init__(self, message: str, *, have: int, need: int) -> None:
        super().__init__(message)
        self.have, self.need = have, need


@dataclass(frozen=True)
class Rule:
    """A bundle's approver rule; `min_role` None = named users only."""

    min_role: str | None
    user_ids: tuple[str, ...]
    is_default: bool
    approvals_required: int = 1
    no_self_approval: bool = False
    group_ids: tuple[str, ...] = ()
    group_members: frozenset[str] = frozenset()  # live members of the named groups

    def allows(self, user_id: str, role: str) -> bool:
        """Whether a member with `role` may approve under this rule."""
        if ROLE_RANK.get(role, 0) < ROLE_RANK["member"]:
            return False
        if user_id in self.user_ids or user_id in self.group_members:
            return True
        return self.min_role is not None and ROLE_RANK[role] >= ROLE_RANK[self.min_role]


def approvals_required(tenant_id: str, bundle_id: str) -> int:
    """The k of the bundle's rule (1 without one): one column, for the delivery's envelope
    and the waiting CLI's count, which need no more of the rule."""
    k = db.session.execute(
        select(BundleApprovers.approvals_required).where(
            BundleApprovers.bundle_id == bundle_id, BundleApprovers.tenant_id == tenant_id
        )
    ).scalar_one_or_none()
    return max(1, k or 1)


def rule_of(tenant_id: str, bundle_id: str) -> Rule:
    """The bundle's rule, or the default (member and above)."""
    return rule_from(db.session.get(BundleApprovers, bundle_id), tenant_id, bundle_id)


def rule_from(row: BundleApprovers | None, tenant_id: str, bundle_id: str) -> Rule:
    """The rule a bundle's row says (None: no row, the default); another workspace's
    row counts as none. Reads the named groups' members where the row names groups."""
    if row is None or row.tenant_id != tenant_id:
        return Rule(min_role=DEFAULT_MIN_ROLE, user_ids=(), is_default=True)
    group_ids = groups.rule_groups(bundle_id, groups.APPROVE)
    return Rule(
        min_role=row.min_role,
        user_ids=tuple(row.user_ids or ()),
        is_default=False,
        approvals_required=max(1, row.approvals_required or 1),
        no_self_approval=bool(row.no_self_approval),
        group_ids=group_ids,
        group_members=groups.members_of(tenant_id, group_ids),
    )


def _role(tenant_id: str, user_id: str) -> str:
    membership = db.session.get(Membership, (user_id, tenant_id))
    return membership.role if membership is not None else "viewer"


def require_approver(
    tenant_id: str,
    user_id: str,
    bundle_id: str,
    role: str | None = None,
    rule: Rule | None = None,
) -> Rule:
    """The bundle's rule; NotAnApprover (403) unless the member may approve under it.

    `role` is the member's role when the caller already read it (the api's signature
    check does), and `rule` the bundle's rule (envcat.services.decision_rules), so the
    hot path reads neither twice.
    """
    rule = rule_of(tenant_id, bundle_id) if rule is None else rule
    if not rule.allows(user_id, role if role is not None else _role(tenant_id, user_id)):
        who = (
            f"members with the {rule.min_role} role or above"
            if rule.min_role
            else "the named approvers"
        )
        if rule.min_role and (rule.user_ids or rule.group_ids):
            who += " and the named approvers"
        if rule.group_ids:
            who += " (people and groups)"
        raise NotAnApprover(f"Only {who} may approve this bundle; ask one of them.")
    return rule


def refuse_self_approval(rule: Rule, request: store.AccessRequest, user_id: str) -> None:
    """SelfApproval (403) when the rule forbids it and `user_id` asked for this request."""
    if rule.no_self_approval and request.context.get(store.REQUESTER_ID_FIELD) == user_id:
        raise SelfApproval(
            "This bundle does not let the person who asked approve their own request; "
            "ask another approver."
        )


def eligible(tenant_id: str, bundle_id: str, rule: Rule | None = None) -> list[tuple[str, str]]:
    """(user id, email) of every live member who may approve the bundle (under `rule`)."""
    rule = rule or rule_of(tenant_id, bundle_id)
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
    emails = emails_of(rule.user_ids)
    users = [ApproverOut(user_id=u, email=emails.get(u, u)) for u in rule.user_ids]
    return ApproversOut(
        bundle_id=bundle_id,
        min_role=rule.min_role,
        users=users,
        approvals_required=rule.approvals_required,
        no_self_approval=rule.no_self_approval,
        is_default=rule.is_default,
        can_approve=rule.allows(caller_id, _role(tenant_id, caller_id)),
        groups=groups.refs(rule.group_ids),
    )


def check_named(tenant_id: str, user_ids: list[str], what: str = "approvers") -> tuple[str, ...]:
    """The ids, deduplicated; 400 unless each is a member with the member role or above."""
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
            f"Named {what} must be members of this workspace with the member role or above.",
            details=[{"loc": ["user_ids"], "msg": "not an eligible member", "type": "value_error"}],
        )
    return named


def set_rule(actor: Actor, bundle_id: str, body: ApproversUpdate) -> ApproversOut:
    """Replace the bundle's rule (admin+, checked by the view); audited."""
    get_bundle(actor.tenant_id, bundle_id)
    if body.min_role is None and not body.user_ids and not body.group_ids:
        raise ValidationFailed("Name at least one approver, or choose a minimum role.")
    named = check_named(actor.tenant_id, body.user_ids)
    group_ids = groups.checked_ids(actor.tenant_id, body.group_ids)
    wanted = Rule(
        body.min_role,
        named,
        False,
        body.approvals_required,
        body.no_self_approval,
        group_ids,
        groups.members_of(actor.tenant_id, group_ids),
    )
    able = len(eligible(actor.tenant_id, bundle_id, wanted))
    if body.approvals_required > able:
        raise ValidationFailed(
            f"This rule needs {body.approvals_required} approvals, but only {able} "
            f"member{'' if able == 1 else 's'} may approve; name more approvers or lower it.",
            details=[
                {
                    "loc": ["approvals_required"],
                    "msg": "more than the eligible approvers",
                    "type": "value_error",
                }
            ],
        )
    values = {
        "min_role": body.min_role,
        "user_ids": list(named),
        "approvals_required": body.approvals_required,
        "no_self_approval": body.no_self_approval,
    }
    groups.save_rule(actor, BundleApprovers, bundle_id, groups.APPROVE, values, group_ids)
    return describe(actor.tenant_id, bundle_id, actor.user_id)


# ---- k-of-n ----------------------------------------------------------------------------

# KEYS: the request's votes hash. ARGV: voter, the vote (JSON), ttl.
# Adds the vote unless this voter already voted; returns [added, every field and value].
_VOTE = """
local added = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {added, redis.call('HGETALL', KEYS[1])}
"""


@dataclass(frozen=True)
class Vote:
    """One approver's recorded vote; `passkey` is their verified proof's JSON, or "" (#20)."""

    user_id: str
    passkey: str = ""


def votes_key(request_id: str) -> str:
    """Redis hash of a request's MACed votes (approver id → {selection, mac, passkey})."""
    return store.votes_key(request_id)  # the take script reports whether it exists


def withdraw_vote(request_id: str, user_id: str) -> None:
    """Forget one approver's vote (their approval could not be recorded after all)."""
    current().redis.hdel(votes_key(request_id), user_id)


def _vote_value(selection: str, mac: str, proof: str) -> str:
    return json.dumps({"selection": selection, "mac": mac, "passkey": proof}, sort_keys=True)


def _parsed_vote(value: str) -> tuple[str, str, str]:
    """(selection, mac, passkey proof) of a stored vote; a vote of before #20 is "selection#mac"."""
    if not value.startswith("{"):
        chosen, _, mac = value.rpartition("#")
        return chosen, mac, ""
    try:
        data = json.loads(value)
        return str(data["selection"]), str(data["mac"]), str(data["passkey"])
    except (ValueError, KeyError, TypeError):
        return "", "", ""


def _count(request: store.AccessRequest, selection: str, flat: list[Any]) -> list[Vote]:
    votes = []
    for voter, value in zip(flat[::2], flat[1::2], strict=True):
        chosen, mac, proof = _parsed_vote(str(value))
        if chosen == selection and integrity.is_vote_intact(
            request, str(voter), chosen, mac, proof
        ):
            votes.append(Vote(str(voter), proof))
    return votes


def progress(request_id: str) -> tuple[int, int] | None:
    """(approvals so far, approvals required) of a pending k-of-n request; None before a vote.

    The count is of the largest group of intact votes for one bundle and key set.
    """
    r = current().redis
    flat = r.hgetall(votes_key(request_id))
    request = store.get(r, request_id) if flat else None
    if request is None:
        return None
    groups: dict[str, int] = {}
    for voter, value in flat.items():
        chosen, mac, proof = _parsed_vote(str(value))
        if integrity.is_vote_intact(request, str(voter), chosen, mac, proof):
            groups[chosen] = groups.get(chosen, 0) + 1
    if not groups:
        return None
    selection, have = max(groups.items(), key=lambda item: item[1])
    bundle_id = selection.partition("|")[0]
    return have, approvals_required(request.tenant_id, bundle_id)


def quorum(
    request: store.AccessRequest,
    user_id: str,
    bundle: tuple[str, str],
    names: list[str],
    origin: audit.Origin,
    rule: Rule | None = None,
    proof: str = "",
) -> list[Vote]:
    """The distinct approvers of exactly this bundle and key set once there are enough.

    With `approvals_required` k > 1 each approval is a MACed vote in Redis, audited
    `request.approval_added`; before the k-th, AwaitingApprovals (202) is raised and
    nothing is released. A second vote by the same person is a 409. `proof` is this
    approver's verified passkey proof (issue #20): it is kept with the vote (under its
    MAC), so the k-th approval carries every voter's.
    """
    bundle_id, bundle_name = bundle
    need = (rule or rule_of(request.tenant_id, bundle_id)).approvals_required
    if need <= 1:
        return [Vote(user_id, proof)]
    selection = bundle_id + "|" + ",".join(sorted(names))
    mac = integrity.vote_mac(request, user_id, selection, proof)
    ttl = max(1, request.seconds_left)
    script = current().redis.register_script(_VOTE)
    vote = _vote_value(selection, mac, proof)
    added, flat = script(keys=[votes_key(request.id)], args=[user_id, vote, ttl])
    if not added:
        raise Conflict("You have already approved this request; it waits for other approvers.")
    voters = _count(request, selection, list(flat))
    if len(voters) >= need:
        return voters
    try:
        audit.record(
            request.tenant_id,
            user_id,
            "request.approval_added",
            request.id,
            details={
                "bundle_id": bundle_id,
                "bundle_name": bundle_name,
                "keys": sorted(names),
                "approvals": len(voters),
                "approvals_required": need,
            },
            origin=origin,
        )
    except Exception:  # audit.record rolled its own unit of work back
        withdraw_vote(request.id, user_id)  # an approval that is not audited does not count
        raise
    store.wake_with_progress(current().redis, request.id)  # the terminal shows "1 of 2"
    raise AwaitingApprovals(
        f"Your approval is recorded: {len(voters)} of {need}. The request waits for "
        f"{need - len(voters)} more approver{'' if need - len(voters) == 1 else 's'} "
        "choosing the same bundle and keys.",
        have=len(voters),
        need=need,
    )
