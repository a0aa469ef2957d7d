"""Which trust policy, if any, lets a workload's ID token receive a bundle (issue #16).

Only the policies of the workspace the request names are considered: a token that
another tenant's policy would accept gets nothing here, and the refusal says nothing
about other tenants. The token's issuer must be one those policies name before any
network call is made (oidc.verify fetches only that issuer's keys).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from envcat.core import wire
from envcat.models import Bundle, WorkloadPolicy, db
from envcat.services import bundles, oidc
from envcat.services.errors import WorkloadNotAllowed

APPROVER_PREFIX = wire.WORKLOAD_APPROVER_PREFIX  # Approval.user_id of a workload's approval
MAX_LABEL = 128  # the audit log's actor column
MAX_CLAIM_SHOWN = 80


@dataclass(frozen=True)
class WorkloadGrant:
    """A verified token matched to one policy: what it may receive, and how."""

    policy_id: str
    policy_name: str
    mode: str
    label: str  # e.g. workload:github:acme/api@refs/heads/main run 123
    bundle_id: str
    bundle_name: str
    keys: tuple[str, ...]
    approver_id: str  # the approval's `user_id` when it approves automatically
    kind: str = "oidc"  # or "service_token"


def _claim_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def rules_match(rules: Sequence[Mapping[str, Any]], claims: Mapping[str, Any]) -> bool:
    """True when every rule holds: `eq` compares exactly, `glob` is fnmatch (case-sensitive)."""
    for rule in rules:
        value = _claim_text(claims.get(str(rule["claim"])))
        if value is None:
            return False
        if rule["op"] == "eq" and value != rule["value"]:
            return False
        if rule["op"] == "glob" and not fnmatch.fnmatchcase(value, str(rule["value"])):
            return False
    return True


def _shown(value: object) -> str:
    text = _claim_text(value) or "?"
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:MAX_CLAIM_SHOWN]


def workload_label(claims: Mapping[str, Any]) -> str:
    """How the audit log and the approval page name the workload."""
    if "repository" in claims and "ref" in claims:
        label = f"workload:github:{_shown(claims['repository'])}@{_shown(claims['ref'])}"
        if "run_id" in claims:
            label += f" run {_shown(claims['run_id'])}"
    else:
        label = f"workload:oidc:{_shown(claims.get('sub'))}"
    return label[:MAX_LABEL]


def _refuse(workspace: str, why: str) -> WorkloadNotAllowed:
    return WorkloadNotAllowed(f"No trust policy of workspace {workspace} accepts this token{why}.")


def authorize(
    id_token: str,
    *,
    tenant_id: str,
    workspace: str,
    bundle: str | None,
    bundle_id: str | None,
    template_keys: Sequence[str],
) -> WorkloadGrant:
    """Verify the token (spending it) and return the policy that grants the request.

    Raises InvalidIdToken (401), IssuerUnavailable (503) or WorkloadNotAllowed (403).
    """
    issuer = oidc.unverified_issuer(id_token)
    rows = db.session.execute(
        select(WorkloadPolicy, Bundle.name)
        .join(Bundle, Bundle.id == WorkloadPolicy.bundle_id)
        .where(WorkloadPolicy.tenant_id == tenant_id, WorkloadPolicy.issuer == issuer)
        .order_by(WorkloadPolicy.name)
    ).all()
    if not rows:
        raise _refuse(workspace, f" from issuer {_shown(issuer)}")
    token = oidc.verify(id_token, issuer=issuer, audiences={p.audience for p, _ in rows})
    label = workload_label(token.claims)
    matching = [
        (policy, name)
        for policy, name in rows
        if policy.audience in token.audiences and rules_match(policy.rules, token.claims)
    ]
    if bundle_id is not None:
        matching = [(p, name) for p, name in matching if p.bundle_id == bundle_id]
    elif bundle is not None:
        matching = [(p, name) for p, name in matching if name == bundle]
    for_bundle = f" for bundle {bundle or bundle_id}" if bundle or bundle_id else ""
    if not matching:
        raise _refuse(workspace, f"{for_bundle} ({label})")
    # automatic policies first, then by name: the same token always gets the same answer
    matching.sort(key=lambda row: (row[0].mode != "automatic", row[0].name))
    for policy, name in matching:
        allowed = list(policy.keys) or sorted(bundles.exported_names(policy.bundle_id))
        if set(template_keys) <= set(allowed):
            keys = [key for key in allowed if key in template_keys] if template_keys else allowed
            return WorkloadGrant(
                policy_id=policy.id,
                policy_name=policy.name,
                mode=policy.mode,
                label=label,
                bundle_id=policy.bundle_id,
                bundle_name=name,
                keys=tuple(keys),
                approver_id=APPROVER_PREFIX + policy.id,
            )
    raise _refuse(workspace, f"{for_bundle} with the keys asked for ({label})")


def authorize_scan(id_token: str, *, tenant_id: str, workspace: str) -> tuple[str, str]:
    """(policy id, workload label) of a policy with `scan` that accepts the token, spent now.

    Only the workspace's scanning policies for the token's issuer are considered (the
    one issuer fetched). Raises InvalidIdToken (401), IssuerUnavailable (503) or
    WorkloadNotAllowed (403), as a request's token does.
    """
    issuer = oidc.unverified_issuer(id_token)
    policies = (
        db.session.execute(
            select(WorkloadPolicy)
            .where(
                WorkloadPolicy.tenant_id == tenant_id,
                WorkloadPolicy.issuer == issuer,
                WorkloadPolicy.scan.is_(True),
            )
            .order_by(WorkloadPolicy.name)
        )
        .scalars()
        .all()
    )
    if not policies:
        raise _refuse(workspace, f" for scanning from issuer {_shown(issuer)}")
    token = oidc.verify(id_token, issuer=issuer, audiences={p.audience for p in policies})
    label = workload_label(token.claims)
    for policy in policies:
        if policy.audience in token.audiences and rules_match(policy.rules, token.claims):
            return policy.id, label
    raise _refuse(workspace, f" for scanning ({label})")


def is_still_granted(tenant_id: str, policy_id: str, bundle_id: str, keys: Sequence[str]) -> bool:
    """True while the policy still exists, approves automatically and allows these keys.

    The worker asks before it seals a workload's approval: a policy deleted or narrowed
    in between releases nothing.
    """
    policy = db.session.execute(
        select(WorkloadPolicy).where(
            WorkloadPolicy.id == policy_id, WorkloadPolicy.tenant_id == tenant_id
        )
    ).scalar_one_or_none()
    if policy is None or policy.mode != "automatic" or policy.bundle_id != bundle_id:
        return False
    return not policy.keys or set(keys) <= set(policy.keys)
