"""Workload trust policies (issue #16): create, list, update, delete; admin+ in the view.

A policy belongs to one tenant and names one of its bundles; another tenant's policy
or bundle is NotFound. Each write is one transaction holding its audit event
(`workload_policy.created|updated|deleted`); a failed write leaves the previous state.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from envcat.core.schemas.workloads import (
    ClaimRule,
    WorkloadPolicyCreate,
    WorkloadPolicyList,
    WorkloadPolicyOut,
    WorkloadPolicyUpdate,
)
from envcat.models import Bundle, WorkloadPolicy, db
from envcat.services import bundles, oidc
from envcat.services.errors import Conflict, NotFound, ValidationFailed
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, as_utc, get_bundle
from envcat.services.transactions import transaction

FIELDS = ("name", "issuer", "audience", "rules", "bundle_id", "keys", "mode", "scan")


def _out(policy: WorkloadPolicy, bundle_name: str) -> WorkloadPolicyOut:
    return WorkloadPolicyOut(
        id=policy.id,
        name=policy.name,
        issuer=policy.issuer,
        audience=policy.audience,
        rules=[ClaimRule.model_validate(rule) for rule in policy.rules],
        bundle_id=policy.bundle_id,
        bundle_name=bundle_name,
        keys=list(policy.keys),
        mode=policy.mode,
        scan=bool(policy.scan),
        created_at=as_utc(policy.created_at),
        updated_at=as_utc(policy.updated_at),
    )


def get_policy(tenant_id: str, policy_id: str) -> WorkloadPolicy:
    """The tenant's policy, or NotFound (also for another tenant's id)."""
    policy = db.session.execute(
        select(WorkloadPolicy).where(
            WorkloadPolicy.id == policy_id, WorkloadPolicy.tenant_id == tenant_id
        )
    ).scalar_one_or_none()
    if policy is None:
        raise NotFound("No such workload policy.")
    return policy


def list_policies(tenant_id: str) -> WorkloadPolicyList:
    """The tenant's policies by name, each with its bundle's name."""
    rows = db.session.execute(
        select(WorkloadPolicy, Bundle.name)
        .join(Bundle, Bundle.id == WorkloadPolicy.bundle_id)
        .where(WorkloadPolicy.tenant_id == tenant_id)
        .order_by(WorkloadPolicy.name)
    ).all()
    return WorkloadPolicyList(items=[_out(policy, name) for policy, name in rows])


def policy_out(tenant_id: str, policy_id: str) -> WorkloadPolicyOut:
    """One policy of the tenant."""
    policy = get_policy(tenant_id, policy_id)
    return _out(policy, get_bundle(tenant_id, policy.bundle_id).name)


def _check_issuer(issuer: str) -> None:
    settings = current().settings
    if not oidc.is_allowed_issuer_url(issuer, allow_http=settings.oidc_allow_http):
        raise ValidationFailed("The issuer must be an https:// URL.")
    allowed = settings.oidc_issuer_allow_list
    if allowed is not None and issuer not in allowed:
        raise ValidationFailed(
            "This server does not trust that issuer (OIDC_ISSUERS); ask its operator."
        )


def check_keys(tenant_id: str, bundle_id: str, keys: list[str]) -> str:
    """The bundle's name, once `keys` are all names it exports (NotFound, ValidationFailed)."""
    bundle = get_bundle(tenant_id, bundle_id)
    if unknown := sorted(set(keys) - bundles.exported_names(bundle.id)):
        raise ValidationFailed(f"Not in bundle {bundle.name}: {', '.join(unknown)}.")
    return bundle.name


def _name_taken(tenant_id: str, name: str, other_than: str | None = None) -> bool:
    statement = select(WorkloadPolicy.id).where(
        WorkloadPolicy.tenant_id == tenant_id, WorkloadPolicy.name == name
    )
    if other_than is not None:
        statement = statement.where(WorkloadPolicy.id != other_than)
    return db.session.execute(statement.limit(1)).first() is not None


def _summary(policy: WorkloadPolicy, bundle_name: str) -> dict[str, Any]:
    return {
        "name": policy.name,
        "issuer": policy.issuer,
        "audience": policy.audience,
        "rules": list(policy.rules),
        "bundle_id": policy.bundle_id,
        "bundle_name": bundle_name,
        "keys": list(policy.keys),
        "mode": policy.mode,
        "scan": bool(policy.scan),
    }


def create_policy(actor: Actor, body: WorkloadPolicyCreate) -> WorkloadPolicyOut:
    """Create a policy; 409 when the name is taken, 400 for an untrusted issuer or a bad key."""
    _check_issuer(body.issuer)
    message = f"A workload policy named {body.name} already exists."
    with transaction(message):
        bundle_name = check_keys(actor.tenant_id, body.bundle_id, body.keys)
        if _name_taken(actor.tenant_id, body.name):
            raise Conflict(message)
        policy = WorkloadPolicy(
            tenant_id=actor.tenant_id,
            name=body.name,
            issuer=body.issuer,
            audience=body.audience,
            rules=[rule.model_dump() for rule in body.rules],
            bundle_id=body.bundle_id,
            keys=list(dict.fromkeys(body.keys)),
            mode=body.mode,
            scan=body.scan,
        )
        db.session.add(policy)
        db.session.flush()  # the id the event names
        actor.append(
            "workload_policy.created", f"workload_policy:{policy.id}", _summary(policy, bundle_name)
        )
    return _out(policy, bundle_name)


def update_policy(actor: Actor, policy_id: str, body: WorkloadPolicyUpdate) -> WorkloadPolicyOut:
    """Change the given fields; the same checks as creation hold for the result."""
    if body.issuer is not None:
        _check_issuer(body.issuer)
    with transaction(f"A workload policy named {body.name} already exists."):
        policy = get_policy(actor.tenant_id, policy_id)
        before = {name: getattr(policy, name) for name in FIELDS}
        if body.name is not None and _name_taken(actor.tenant_id, body.name, policy.id):
            raise Conflict(f"A workload policy named {body.name} already exists.")
        for name in FIELDS:
            value = getattr(body, name)
            if value is None:
                continue
            if name == "rules":
                value = [rule.model_dump() for rule in value]
            elif name == "keys":
                value = list(dict.fromkeys(value))
            setattr(policy, name, value)
        bundle_name = check_keys(actor.tenant_id, policy.bundle_id, list(policy.keys))
        changed = sorted(name for name in FIELDS if getattr(policy, name) != before[name])
        if changed:
            details = {**_summary(policy, bundle_name), "fields": changed}
            actor.append("workload_policy.updated", f"workload_policy:{policy.id}", details)
    return _out(policy, bundle_name)


def delete_policy(actor: Actor, policy_id: str) -> None:
    """Delete a policy: no new token is accepted by it, and approvals not yet sealed fail."""
    with transaction():
        policy = get_policy(actor.tenant_id, policy_id)
        name = policy.name
        db.session.delete(policy)
        actor.append("workload_policy.deleted", f"workload_policy:{policy_id}", {"name": name})
