"""Requests made by machines (issue #16): a CI workload's OIDC ID token or a service token.

Either is checked first (nothing is stored on a refusal), then the request is stored
like any other. An automatic grant approves at once through `lifecycle.approve`, the
same path as a person, so the worker seals and signs as usual (the caller enqueues
the returned approval); a grant in approval mode waits for a person, and the
approval page names the workload.
"""

from __future__ import annotations

from envcat.core.schemas.requests import (
    MAX_TEMPLATE_KEYS,
    AccessRequestCreate,
    AccessRequestCreated,
)
from envcat.services import audit, service_tokens, workload_access, workspaces
from envcat.services.access_requests import store
from envcat.services.access_requests.lifecycle import AcceptedApproval, approve, store_request
from envcat.services.errors import EnvCatError
from envcat.services.runtime import current

Created = tuple[AccessRequestCreated, AcceptedApproval | None]


def create_for_workload(body: AccessRequestCreate, client_ip: str, origin: audit.Origin) -> Created:
    """A request carrying an ID token: verified, spent, matched to a trust policy."""
    assert body.id_token is not None  # noqa: S101  # the view calls this only with a token
    workspace = workspaces.resolve(body.workspace)
    grant = workload_access.authorize(
        body.id_token,
        tenant_id=workspace.id,
        workspace=workspace.slug,
        bundle=body.bundle,
        bundle_id=body.bundle_id,
        template_keys=body.template_keys,
    )
    return _create_granted(body, workspace, grant, client_ip, origin)


def create_for_service_token(
    body: AccessRequestCreate, token: str, client_ip: str, origin: audit.Origin
) -> Created:
    """A request carrying a service token (Authorization: Bearer ect_…): always automatic."""
    workspace = workspaces.resolve(body.workspace)
    grant = service_tokens.authorize(
        token,
        tenant_id=workspace.id,
        bundle=body.bundle,
        bundle_id=body.bundle_id,
        template_keys=body.template_keys,
    )
    return _create_granted(body, workspace, grant, client_ip, origin)


def _create_granted(
    body: AccessRequestCreate,
    workspace: workspaces.Workspace,
    grant: workload_access.WorkloadGrant,
    client_ip: str,
    origin: audit.Origin,
) -> Created:
    hints = body.model_copy(update={"bundle": grant.bundle_name, "bundle_id": grant.bundle_id})
    if grant.mode != "automatic":
        hints = hints.model_copy(update={"template_keys": list(grant.keys)[:MAX_TEMPLATE_KEYS]})
    source = "policy" if grant.kind == "oidc" else "token"
    context = {
        **body.context.model_dump(),
        "workload": f"{grant.label} ({source} {grant.policy_name})",
    }
    new, created = store_request(hints, workspace, client_ip, context)
    audit.record(
        workspace.id,
        grant.label,
        "workload.requested" if grant.kind == "oidc" else "service_token.used",
        created.id,
        details={
            f"{'policy' if grant.kind == 'oidc' else 'token'}_id": grant.policy_id,
            "policy" if grant.kind == "oidc" else "token": grant.policy_name,
            "mode": grant.mode,
            "bundle_id": grant.bundle_id,
            "keys": list(grant.keys),
        },
        origin=origin,
    )
    created = created.model_copy(update={"workload_mode": grant.mode, "workload": grant.label})
    if grant.mode != "automatic":
        return created, None
    try:
        accepted = approve(
            created.id,
            tenant_id=workspace.id,
            user_id=grant.approver_id,
            bundle_id=grant.bundle_id,
            include_keys=list(grant.keys),
            origin=origin,
            workload=grant,
        )
    except EnvCatError:
        store.cancel_request(current().redis, created.id, new.poll_token)  # nobody will poll it
        raise
    return created, accepted
