"""Approver passkeys (issue #20): the caller's own (signed), a workspace's (public), the policy."""

from __future__ import annotations

from flask import Blueprint

from envcat.api.auth import caller, signed_blueprint
from envcat.api.openapi import endpoint
from envcat.core.schemas.passkeys import (
    ApprovalChallenge,
    ApproverList,
    PasskeyList,
    PasskeyOut,
    PasskeyRegistration,
    PasskeyRename,
    RegistrationOptions,
    StatementRequest,
    WorkspacePolicyIn,
    WorkspacePolicyOut,
)
from envcat.services import passkey_approvals, passkeys

bp = signed_blueprint("passkeys")
public_bp = Blueprint("approvers", __name__, url_prefix="/api/v1")


@endpoint(
    bp,
    "/passkey-challenges",
    "POST",
    summary="Start registering a passkey: options with a one-use challenge",
    auth="signed",
    responses={200: RegistrationOptions},
)
def registration_options() -> RegistrationOptions:
    """Any member: a passkey belongs to the person, not to a workspace."""
    return RegistrationOptions(options=passkeys.registration_options(caller().user_id))


@endpoint(
    bp,
    "/passkeys",
    "POST",
    summary="Finish registering a passkey (ES256 or EdDSA, user verification required); audited",
    auth="signed",
    body=PasskeyRegistration,
    responses={201: PasskeyOut},
    errors=(400, 409),
)
def register(body: PasskeyRegistration) -> tuple[PasskeyOut, int]:
    """Verifies the attestation against the challenge of POST /passkey-challenges."""
    who = caller()
    return passkeys.register(who.user_id, who.tenant_id, body), 201


@endpoint(
    bp,
    "/passkeys",
    "GET",
    summary="The caller's passkeys",
    auth="signed",
    responses={200: PasskeyList},
)
def list_passkeys() -> PasskeyList:
    """Names, credential ids and fingerprints; never anything secret."""
    return passkeys.list_for(caller().user_id)


@endpoint(
    bp,
    "/passkeys/<passkey_id>",
    "PATCH",
    summary="Rename one of the caller's passkeys",
    auth="signed",
    body=PasskeyRename,
    responses={200: PasskeyOut},
    errors=(400,),
)
def rename(passkey_id: str, body: PasskeyRename) -> PasskeyOut:
    """Another person's passkey is 404."""
    return passkeys.rename(caller().user_id, passkey_id, body.name)


@endpoint(
    bp,
    "/passkeys/<passkey_id>",
    "DELETE",
    summary="Remove one of the caller's passkeys; audited",
    auth="signed",
    responses={204: None},
)
def remove(passkey_id: str) -> tuple[str, int]:
    """Another person's passkey is 404."""
    who = caller()
    passkeys.remove(who.user_id, who.tenant_id, passkey_id)
    return "", 204


@endpoint(
    bp,
    "/workspace/policy",
    "GET",
    summary="The workspace's approval policy",
    auth="signed",
    responses={200: WorkspacePolicyOut},
)
def get_policy() -> WorkspacePolicyOut:
    """Any member."""
    return passkeys.policy_of(caller().tenant_id)


@endpoint(
    bp,
    "/workspace/policy",
    "PUT",
    summary="Require a passkey, or the typed phrase, for every approval (owner only); audited",
    auth="signed",
    body=WorkspacePolicyIn,
    responses={200: WorkspacePolicyOut},
    errors=(400, 403),
)
def put_policy(body: WorkspacePolicyIn) -> WorkspacePolicyOut:
    """Owner only; a field left out keeps its setting."""
    who = caller()
    who.require("owner")
    return passkeys.set_policy(who.tenant_id, who.user_id, body)


@endpoint(
    bp,
    "/requests/<request_id>/approval-statement",
    "POST",
    summary="The statement a passkey signs to approve these keys (challenge = its SHA-256)",
    auth="signed",
    body=StatementRequest,
    responses={200: ApprovalChallenge},
    errors=(400, 403, 409),
)
def approval_statement(request_id: str, body: StatementRequest) -> ApprovalChallenge:
    """Member or above; the same checks as approving, nothing recorded.

    With `reason`, the statement of an owner's break-glass release: it carries the reason.
    """
    who = caller()
    who.require("member")
    return passkey_approvals.challenge(
        request_id,
        who.tenant_id,
        who.user_id,
        body.bundle_id,
        body.include_keys,
        body.reason or "",
        body.phrase,
    )


@endpoint(
    public_bp,
    "/workspaces/<slug>/approvers",
    "GET",
    summary="The passkeys of a workspace's approving members (for `envcat approvers`)",
    auth="public",
    responses={200: ApproverList},
    errors=(404,),
)
def approvers(slug: str) -> ApproverList:
    """Public keys and the names their owners gave them; no emails."""
    return passkeys.approvers(slug)
