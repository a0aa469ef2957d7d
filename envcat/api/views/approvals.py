"""Signed endpoints: approve (encrypt-from-bundle) and deny (DESIGN §5)."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.backpressure import refuse_when_behind
from envcat.api.context import client_origin
from envcat.api.openapi import endpoint
from envcat.api.views import team
from envcat.core.schemas.requests import DecisionAccepted, EncryptFromBundle
from envcat.core.schemas.team import ApprovalRecorded
from envcat.services import approvers
from envcat.services.access_requests import lifecycle
from envcat.workers import tasks
from envcat.workers.enqueue import enqueue

bp = signed_blueprint("approvals")


@endpoint(
    bp,
    "/requests/<request_id>/encrypt-from-bundle",
    "POST",
    summary="Approve a request: release the chosen keys of a bundle to its CLI",
    auth="signed",
    body=EncryptFromBundle,
    responses={202: DecisionAccepted},
    errors=(400, 401, 403, 404, 409, 503),
)
def encrypt_from_bundle(
    request_id: str, body: EncryptFromBundle
) -> tuple[DecisionAccepted | ApprovalRecorded, int]:
    """Member or above. Validates now; the worker seals the values moments later."""
    who = caller()
    who.require("member")
    refuse_when_behind("approve")
    try:
        accepted = lifecycle.approve(
            request_id,
            tenant_id=who.tenant_id,
            user_id=who.user_id,
            bundle_id=body.bundle_id,
            include_keys=body.include_keys,
            origin=client_origin(),
            passkey=body.passkey,
            role=who.role,  # read by the signature check: not again
            grant_hours=body.grant_hours,  # issue #17
            phrase=body.phrase,  # where the workspace requires approvers to type it
        )
    except approvers.AwaitingApprovals as waiting:  # k-of-n: recorded, nothing released yet
        recorded = ApprovalRecorded(
            approvals=waiting.have, approvals_required=waiting.need, message=waiting.message
        )
        return recorded, 202
    # after the audit commit: the task re-reads everything it needs
    enqueue(
        tasks.encrypt_from_bundle,
        (accepted.request_id, accepted.mac),
        on_failure=lambda: lifecycle.abandon(accepted),
        message="The task queue is unavailable; ask the developer to retry.",
    )
    team.notify_decision(who.tenant_id, request_id, "request.approved", accepted.notice)
    return DecisionAccepted(), 202


@endpoint(
    bp,
    "/requests/<request_id>/deny",
    "POST",
    summary="Deny a request",
    auth="signed",
    responses={200: DecisionAccepted},
    errors=(401, 403, 404, 409),
)
def deny(request_id: str) -> DecisionAccepted:
    """Member or above."""
    who = caller()
    who.require("member")
    lifecycle.deny(request_id, tenant_id=who.tenant_id, user_id=who.user_id, origin=client_origin())
    team.notify_decision(who.tenant_id, request_id, "request.denied")
    return DecisionAccepted()
