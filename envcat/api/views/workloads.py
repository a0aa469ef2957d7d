"""Signed endpoints: workload trust policies and service tokens (issue #16). Thin."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.workloads import (
    ServiceTokenCreate,
    ServiceTokenCreated,
    ServiceTokenList,
    WorkloadPolicyCreate,
    WorkloadPolicyList,
    WorkloadPolicyOut,
    WorkloadPolicyUpdate,
)
from envcat.services import service_tokens, workloads

bp = signed_blueprint("workloads")


@endpoint(
    bp,
    "/workload-policies",
    "GET",
    summary="List the tenant's workload trust policies",
    auth="signed",
    responses={200: WorkloadPolicyList},
    errors=(403,),
)
def list_policies() -> WorkloadPolicyList:
    """Admins list policies: they say which pipelines may receive which values."""
    caller().require("admin")
    return workloads.list_policies(caller().tenant_id)


@endpoint(
    bp,
    "/workload-policies",
    "POST",
    summary="Trust an OIDC issuer's tokens whose claims match, for one bundle",
    auth="signed",
    body=WorkloadPolicyCreate,
    responses={201: WorkloadPolicyOut},
    errors=(400, 403, 404, 409),
)
def create_policy(body: WorkloadPolicyCreate) -> tuple[WorkloadPolicyOut, int]:
    """Admins create policies (audited)."""
    caller().require("admin")
    return workloads.create_policy(current_actor(), body), 201


@endpoint(
    bp,
    "/workload-policies/<policy_id>",
    "GET",
    summary="One workload trust policy",
    auth="signed",
    responses={200: WorkloadPolicyOut},
    errors=(403, 404),
)
def get_policy(policy_id: str) -> WorkloadPolicyOut:
    """Admins read policies."""
    caller().require("admin")
    return workloads.policy_out(caller().tenant_id, policy_id)


@endpoint(
    bp,
    "/workload-policies/<policy_id>",
    "PATCH",
    summary="Change a workload trust policy",
    auth="signed",
    body=WorkloadPolicyUpdate,
    responses={200: WorkloadPolicyOut},
    errors=(400, 403, 404, 409),
)
def update_policy(policy_id: str, body: WorkloadPolicyUpdate) -> WorkloadPolicyOut:
    """Admins edit policies (audited)."""
    caller().require("admin")
    return workloads.update_policy(current_actor(), policy_id, body)


@endpoint(
    bp,
    "/workload-policies/<policy_id>",
    "DELETE",
    summary="Delete a workload trust policy",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def delete_policy(policy_id: str) -> tuple[str, int]:
    """Admins delete policies (audited)."""
    caller().require("admin")
    workloads.delete_policy(current_actor(), policy_id)
    return "", 204


@endpoint(
    bp,
    "/service-tokens",
    "GET",
    summary="List the tenant's service tokens (never the tokens themselves)",
    auth="signed",
    responses={200: ServiceTokenList},
    errors=(403,),
)
def list_service_tokens() -> ServiceTokenList:
    """Admins list service tokens: prefix, scope, expiry, last use."""
    caller().require("admin")
    return service_tokens.list_tokens(caller().tenant_id)


@endpoint(
    bp,
    "/service-tokens",
    "POST",
    summary="Make a service token for one bundle; the token is in this reply only",
    auth="signed",
    body=ServiceTokenCreate,
    responses={201: ServiceTokenCreated},
    errors=(400, 403, 404),
)
def create_service_token(body: ServiceTokenCreate) -> tuple[ServiceTokenCreated, int]:
    """Admins make service tokens (audited)."""
    caller().require("admin")
    return service_tokens.create_token(current_actor(), body), 201


@endpoint(
    bp,
    "/service-tokens/<token_id>",
    "DELETE",
    summary="Revoke a service token at once",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def revoke_service_token(token_id: str) -> tuple[str, int]:
    """Admins revoke service tokens (audited)."""
    caller().require("admin")
    service_tokens.revoke_token(current_actor(), token_id)
    return "", 204
