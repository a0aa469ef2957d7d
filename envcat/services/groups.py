"""Groups (teams) of a workspace's members (issue #17), and the groups bundle rules name.

Groups are EnvCat's own objects, also under Clerk (Clerk stays the source of
truth for who is a member; the groups only pick among them). A group member row
references the workspace membership, so leaving or being removed from the
workspace drops the person from every group; the queries here also join the
live membership, so a stale row can never grant anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import delete, select

from envcat.core.schemas.groups import (
    GroupCreate,
    GroupList,
    GroupMemberOut,
    GroupOut,
    GroupUpdate,
)
from envcat.core.schemas.team import GroupRef
from envcat.models import (
    Bundle,
    BundleApprovers,
    BundleEditors,
    BundleRuleGroup,
    Group,
    GroupMember,
    Membership,
    User,
    db,
)
from envcat.services.errors import Conflict, NotFound, ValidationFailed
from envcat.services.tenancy import Actor
from envcat.services.transactions import transaction

APPROVE, EDIT = "approve", "edit"
_Row = TypeVar("_Row", BundleApprovers, BundleEditors)
_TAKEN = "A group with that name already exists in this workspace."


class GroupInUse(Conflict):
    """The group is named by a bundle's rule; take it out of the rule first."""

    code = "group_in_use"


# ---- reads used by the rules ---------------------------------------------------------


def members_of(tenant_id: str, group_ids: Iterable[str]) -> frozenset[str]:
    """User ids of the live workspace members in any of these groups."""
    wanted = tuple(group_ids)
    if not wanted:
        return frozenset()
    rows = db.session.execute(
        select(GroupMember.user_id)
        .join(Group, Group.id == GroupMember.group_id)
        .join(
            Membership,
            (Membership.user_id == GroupMember.user_id) & (Membership.tenant_id == tenant_id),
        )
        .where(Group.tenant_id == tenant_id, GroupMember.group_id.in_(wanted))
    ).scalars()
    return frozenset(rows)


def rule_groups(bundle_id: str, purpose: str) -> tuple[str, ...]:
    """Ids of the groups a bundle's approve or edit rule names."""
    return tuple(
        db.session.execute(
            select(BundleRuleGroup.group_id)
            .where(BundleRuleGroup.bundle_id == bundle_id, BundleRuleGroup.purpose == purpose)
            .order_by(BundleRuleGroup.group_id)
        ).scalars()
    )


def refs(group_ids: Iterable[str]) -> list[GroupRef]:
    """Id and name of each group, by name."""
    wanted = tuple(group_ids)
    rows = db.session.execute(
        select(Group.id, Group.name).where(Group.id.in_(wanted or ("",))).order_by(Group.name)
    ).all()
    return [GroupRef(id=gid, name=name) for gid, name in rows]


def checked_ids(tenant_id: str, group_ids: Iterable[str]) -> tuple[str, ...]:
    """The ids, deduplicated; a 400 naming `group_ids` when one is not this workspace's."""
    wanted = tuple(dict.fromkeys(group_ids))
    found = set(
        db.session.execute(
            select(Group.id).where(Group.tenant_id == tenant_id, Group.id.in_(wanted or ("",)))
        ).scalars()
    )
    if len(found) != len(wanted):
        raise ValidationFailed(
            "Each named group must be a group of this workspace.",
            details=[{"loc": ["group_ids"], "msg": "unknown group", "type": "value_error"}],
        )
    return wanted


def replace_rule_groups(bundle_id: str, purpose: str, group_ids: Iterable[str]) -> None:
    """Set the groups of a bundle's rule, inside the caller's transaction."""
    db.session.execute(
        delete(BundleRuleGroup).where(
            BundleRuleGroup.bundle_id == bundle_id, BundleRuleGroup.purpose == purpose
        )
    )
    for group_id in group_ids:
        db.session.add(BundleRuleGroup(bundle_id=bundle_id, purpose=purpose, group_id=group_id))


def save_rule(
    actor: Actor,
    row_type: type[_Row],
    bundle_id: str,
    purpose: str,
    values: dict[str, Any],
    group_ids: tuple[str, ...],
) -> None:
    """Write a bundle's approve or edit rule and its groups in one transaction; audited."""
    with transaction():
        row = db.session.get(row_type, bundle_id)
        if row is None:
            row = row_type(bundle_id=bundle_id, tenant_id=actor.tenant_id)
            db.session.add(row)
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_by = actor.user_id
        replace_rule_groups(bundle_id, purpose, group_ids)
        action = "bundle.approvers_changed" if purpose == APPROVE else "bundle.editors_changed"
        details = {"bundle_id": bundle_id, **values, "group_ids": list(group_ids)}
        actor.append(action, bundle_id, details=details)


# ---- CRUD --------------------------------------------------------------------------------


def _get(tenant_id: str, group_id: str) -> Group:
    group = db.session.get(Group, group_id)
    if group is None or group.tenant_id != tenant_id:
        raise NotFound("No such group.")
    return group


def _out(group: Group) -> GroupOut:
    rows = db.session.execute(
        select(User.id, User.email)
        .join(GroupMember, GroupMember.user_id == User.id)
        .join(
            Membership,
            (Membership.user_id == User.id) & (Membership.tenant_id == group.tenant_id),
        )
        .where(GroupMember.group_id == group.id, User.deleted_at.is_(None))
        .order_by(User.email)
    ).all()
    members = [GroupMemberOut(user_id=uid, email=email) for uid, email in rows]
    return GroupOut(id=group.id, name=group.name, description=group.description, members=members)


def list_groups(tenant_id: str) -> GroupList:
    """The workspace's groups with their members, by name."""
    rows = db.session.execute(
        select(Group).where(Group.tenant_id == tenant_id).order_by(Group.name)
    ).scalars()
    return GroupList(groups=[_out(group) for group in rows])


def show(tenant_id: str, group_id: str) -> GroupOut:
    """One group; NotFound for another workspace's."""
    return _out(_get(tenant_id, group_id))


def _members(tenant_id: str, user_ids: list[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(user_ids))
    found = set(
        db.session.execute(
            select(Membership.user_id).where(
                Membership.tenant_id == tenant_id, Membership.user_id.in_(wanted or ("",))
            )
        ).scalars()
    )
    if len(found) != len(wanted):
        raise ValidationFailed(
            "Group members must be members of this workspace.",
            details=[{"loc": ["user_ids"], "msg": "not a member", "type": "value_error"}],
        )
    return wanted


def _set_members(actor: Actor, group: Group, user_ids: tuple[str, ...]) -> None:
    db.session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    for user_id in user_ids:
        db.session.add(
            GroupMember(
                group_id=group.id,
                user_id=user_id,
                tenant_id=group.tenant_id,
                added_by=actor.user_id,
            )
        )


def create(actor: Actor, body: GroupCreate) -> GroupOut:
    """A new group (admin+, checked by the view); 409 on a taken name; audited."""
    user_ids = _members(actor.tenant_id, body.user_ids)
    group = Group(
        tenant_id=actor.tenant_id,
        name=body.name,
        description=body.description,
        created_by=actor.user_id,
    )
    with transaction(_TAKEN):
        db.session.add(group)
        db.session.flush()
        _set_members(actor, group, user_ids)
        actor.append(
            "group.created", group.id, details={"name": group.name, "user_ids": list(user_ids)}
        )
    return _out(group)


def update(actor: Actor, group_id: str, body: GroupUpdate) -> GroupOut:
    """Rename, re-describe or replace the members (admin+); audited."""
    group = _get(actor.tenant_id, group_id)
    user_ids = _members(actor.tenant_id, body.user_ids) if body.user_ids is not None else None
    with transaction(_TAKEN):
        if body.name is not None:
            group.name = body.name
        if body.description is not None:
            group.description = body.description
        if user_ids is not None:
            _set_members(actor, group, user_ids)
        details: dict[str, object] = {"name": group.name}
        if user_ids is not None:
            details["user_ids"] = list(user_ids)
        actor.append("group.updated", group.id, details=details)
    return _out(group)


def remove(actor: Actor, group_id: str) -> None:
    """Delete a group (admin+); 409 group_in_use while a bundle's rule names it; audited."""
    group = _get(actor.tenant_id, group_id)
    naming = db.session.execute(
        select(Bundle.name)
        .join(BundleRuleGroup, BundleRuleGroup.bundle_id == Bundle.id)
        .where(BundleRuleGroup.group_id == group.id)
        .order_by(Bundle.name)
        .distinct()
    ).scalars()
    if names := list(naming):
        raise GroupInUse(
            f"The rules of {', '.join(names[:5])} name this group; take it out of them first."
        )
    name = group.name
    with transaction():
        db.session.delete(group)
        actor.append("group.deleted", group_id, details={"name": name})
