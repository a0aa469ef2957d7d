"""services.decision_rules on SQLite and PostgreSQL: the one-statement read of everything an
approval consults says exactly what the one-by-one readers say, with no row, every row and
each row alone, and a rule row of another workspace counts for nothing."""

from __future__ import annotations

import pytest
from flask import Flask

from envcat.core.settings import Settings
from envcat.models import (
    BundleApprovers,
    BundleRequesters,
    Group,
    GroupMember,
    NotificationTarget,
    Tenant,
    WorkspacePolicy,
    db,
)
from envcat.models.groups import BundleRuleGroup
from envcat.services import approvers, decision_rules, notifications, passkeys, phrases, requesters
from envcat.services.errors import NotFound
from tests.support.api import SeedKey, seed_bundle
from tests.support.settings import make_settings
from tests.support.signed import add_member

TENANT, OTHER = "t-acme", "t-other"
KEYS = [SeedKey("API_KEY", "v")]


@pytest.fixture
def settings(database_url: str, redis_url: str, broker_url: str) -> Settings:
    return make_settings(database_url, redis_url, broker_url, smtp_host="127.0.0.1")


def _one_by_one(bundle_id: str) -> decision_rules.DecisionRules:
    """What the separate readers (pages, tasks) say of the same workspace and bundle."""
    return decision_rules.DecisionRules(
        require_phrase=phrases.requires_phrase(TENANT),
        require_passkey=passkeys.requires_passkey(TENANT),
        approvers=approvers.rule_of(TENANT, bundle_id),
        requesters=requesters.rule_of(TENANT, bundle_id),
        notice=notifications.has_channel(TENANT),
    )


def _add_rows(bundle_id: str, policy: bool, target: bool, rule: bool, members_only: bool) -> None:
    if policy:
        db.session.add(WorkspacePolicy(tenant_id=TENANT, require_passkey=True, require_phrase=True))
    if target:  # email turned off, no webhook: no channel although SMTP is configured
        db.session.add(NotificationTarget(tenant_id=TENANT, webhook_url=None, email_enabled=False))
    if rule:
        group = Group(tenant_id=TENANT, name="oncall")
        db.session.add(group)
        db.session.flush()
        db.session.add(GroupMember(group_id=group.id, user_id="u-grouped", tenant_id=TENANT))
        db.session.add(BundleRuleGroup(bundle_id=bundle_id, purpose="approve", group_id=group.id))
        db.session.add(
            BundleApprovers(
                bundle_id=bundle_id,
                tenant_id=TENANT,
                min_role="admin",
                user_ids=["u-named"],
                approvals_required=2,
                no_self_approval=True,
            )
        )
    if members_only:
        db.session.add(
            BundleRequesters(bundle_id=bundle_id, tenant_id=TENANT, requesters="members")
        )
    db.session.commit()


# No row, every row, and each row alone: each field is read from its own join.
COMBINATIONS = [
    (False,) * 4,
    (True,) * 4,
    *[tuple(i == alone for i in range(4)) for alone in range(4)],
]


@pytest.mark.parametrize(("policy", "target", "rule", "members_only"), COMBINATIONS)
def test_one_statement_says_what_the_separate_readers_say(
    service_app: Flask, policy: bool, target: bool, rule: bool, members_only: bool
) -> None:
    for user in ("u-named", "u-grouped"):
        add_member(user, TENANT, "member")
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    _add_rows(bundle_id, policy, target, rule, members_only)
    db.session.expire_all()
    together = decision_rules.read(TENANT, bundle_id)
    assert together == _one_by_one(bundle_id)
    # and each field is the row's, not a default that happens to agree
    assert together.require_phrase is policy and together.require_passkey is policy
    assert together.notice is not target
    assert together.requesters == ("members" if members_only else "anyone")
    assert together.approvers.is_default is not rule
    if rule:
        assert together.approvers.approvals_required == 2
        assert together.approvers.group_members == frozenset({"u-grouped"})


def test_another_workspaces_rows_count_for_nothing(service_app: Flask) -> None:
    """A rule row naming this bundle under another workspace (a corrupted or forged row)
    is ignored, as the separate readers ignore it; so are the other workspace's policy
    and notification target."""
    bundle_id = seed_bundle(TENANT, "production/api", KEYS)
    db.session.add(Tenant(id=OTHER, name=OTHER, kind="personal"))
    db.session.flush()
    db.session.add(WorkspacePolicy(tenant_id=OTHER, require_passkey=True, require_phrase=True))
    db.session.add(NotificationTarget(tenant_id=OTHER, webhook_url=None, email_enabled=False))
    db.session.add(BundleApprovers(bundle_id=bundle_id, tenant_id=OTHER, min_role="owner"))
    db.session.add(BundleRequesters(bundle_id=bundle_id, tenant_id=OTHER, requesters="members"))
    db.session.commit()
    db.session.expire_all()
    together = decision_rules.read(TENANT, bundle_id)
    assert together == _one_by_one(bundle_id)
    assert together == decision_rules.DecisionRules(
        require_phrase=False,
        require_passkey=False,
        approvers=approvers.Rule(min_role="member", user_ids=(), is_default=True),
        requesters="anyone",
        notice=True,  # SMTP configured, email not turned off in this workspace
    )


def test_without_smtp_only_a_webhook_is_a_channel(
    database_url: str, redis_url: str, broker_url: str
) -> None:
    from envcat.services.runtime import create_service_app
    from tests.support.databases import migrated

    migrated(database_url)
    app = create_service_app(make_settings(database_url, redis_url, broker_url))
    with app.app_context():
        bundle_id = seed_bundle(TENANT, "production/api", KEYS)
        db.session.commit()
        assert decision_rules.read(TENANT, bundle_id).notice is False
        db.session.add(
            NotificationTarget(tenant_id=TENANT, webhook_url="https://hooks.example.test/x")
        )
        db.session.commit()
        assert decision_rules.read(TENANT, bundle_id).notice is True
        assert notifications.has_channel(TENANT) is True
        db.session.remove()
        db.engine.dispose()


def test_a_workspace_deleted_meanwhile_is_not_found(service_app: Flask) -> None:
    """Deleted between the bundle's read and this one: a 404, never a 500."""
    with pytest.raises(NotFound):
        decision_rules.read("t-deleted", "b-any")
