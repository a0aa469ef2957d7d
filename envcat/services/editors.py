"""Who may edit each bundle (issue #17): a minimum role, named users and groups.

No rule keeps today's behaviour: admins and owners edit. A rule can admit
named members or groups (members with the member role or above) and can narrow
the roles (e.g. owners only). Owners may always edit, so no rule locks a
workspace out of its own bundle; viewers never edit. Changing a rule (this one
or the approvers') needs the admin role and the right to edit the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from envcat.core.schemas.groups import EditorsOut, EditorsUpdate, GroupMemberOut
from envcat.models import BundleEditors, BundleKey, db
from envcat.services import approvers, groups
from envcat.services.approvers import ROLE_RANK
from envcat.services.errors import Forbidden
from envcat.services.tenancy import Actor, emails_of, get_bundle

DEFAULT_MIN_ROLE = "admin"


class NotAnEditor(Forbidden):
    """A member whom the bundle's edit rule does not admit."""

    code = "not_an_editor"


@dataclass(frozen=True)
class EditRule:
    """A bundle's edit rule; `min_role` None = named users and groups only."""

    min_role: str | None
    user_ids: tuple[str, ...]
    group_ids: tuple[str, ...]
    group_members: frozenset[str]
    is_default: bool

    def allows(self, user_id: str, role: str) -> bool:
        """Whether a member with `role` may edit under this rule (owners always may)."""
        rank = ROLE_RANK.get(role, 0)
        if rank >= ROLE_RANK["owner"]:
            return True
        if rank < ROLE_RANK["member"]:
            return False
        if user_id in self.user_ids or user_id in self.group_members:
            return True
        return self.min_role is not None and rank >= ROLE_RANK[self.min_role]


def rule_of(tenant_id: str, bundle_id: str) -> EditRule:
    """The bundle's edit rule, or the default (admins and owners)."""
    row = db.session.get(BundleEditors, bundle_id)
    if row is None or row.tenant_id != tenant_id:
        return EditRule(DEFAULT_MIN_ROLE, (), (), frozenset(), is_default=True)
    group_ids = groups.rule_groups(bundle_id, groups.EDIT)
    return EditRule(
        row.min_role,
        tuple(row.user_ids or ()),
        group_ids,
        groups.members_of(tenant_id, group_ids),
        is_default=False,
    )


def require_editor(tenant_id: str, user_id: str, role: str, bundle_id: str) -> None:
    """NotFound for another workspace's bundle; NotAnEditor (403) unless the rule admits."""
    if ROLE_RANK.get(role, 0) < ROLE_RANK["member"]:
        raise Forbidden(f"This needs the admin role; you are {role}.")
    get_bundle(tenant_id, bundle_id)
    rule = rule_of(tenant_id, bundle_id)
    if rule.allows(user_id, role):
        return
    if rule.is_default:  # today's answer, word for word
        raise Forbidden(f"This needs the admin role; you are {role}.")
    raise NotAnEditor("The bundle's edit rule does not include you; ask one of its editors.")


def require_key_editor(tenant_id: str, user_id: str, role: str, key_id: str) -> None:
    """NotAnEditor unless the caller may edit every bundle the library key is part of."""
    bundle_ids = db.session.execute(
        select(BundleKey.bundle_id).where(BundleKey.key_id == key_id)
    ).scalars()
    for bundle_id in bundle_ids:
        if not rule_of(tenant_id, bundle_id).allows(user_id, role):
            raise NotAnEditor("This key is part of a bundle whose edit rule does not include you.")


def describe(tenant_id: str, bundle_id: str, caller_id: str, role: str) -> EditorsOut:
    """The bundle's edit rule as the bundle page shows it."""
    get_bundle(tenant_id, bundle_id)
    rule = rule_of(tenant_id, bundle_id)
    emails = emails_of(rule.user_ids)
    return EditorsOut(
        bundle_id=bundle_id,
        min_role=rule.min_role,
        users=[GroupMemberOut(user_id=u, email=emails.get(u, u)) for u in rule.user_ids],
        groups=groups.refs(rule.group_ids),
        is_default=rule.is_default,
        can_edit=rule.allows(caller_id, role),
    )


def set_rule(actor: Actor, role: str, bundle_id: str, body: EditorsUpdate) -> EditorsOut:
    """Replace the bundle's edit rule (admin+ who may edit it); audited."""
    require_editor(actor.tenant_id, actor.user_id, role, bundle_id)
    named = approvers.check_named(actor.tenant_id, body.user_ids, "editors")
    group_ids = groups.checked_ids(actor.tenant_id, body.group_ids)
    values = {"min_role": body.min_role, "user_ids": list(named)}
    groups.save_rule(actor, BundleEditors, bundle_id, groups.EDIT, values, group_ids)
    return describe(actor.tenant_id, bundle_id, actor.user_id, role)
