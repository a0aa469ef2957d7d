"""The request lifecycle rules (DESIGN §5): create, show, wait, cancel, approve, deny.

A request names its workspace when it is made (issue #11); only a member of
that workspace can decide it, and to anyone else it does not exist. The
decisions and what follows them (delivery, cancellation of an approved request)
are audited in that workspace. The poll token is checked before any state is
revealed to a poller. What the worker will rely on is MACed here (integrity).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from envcat.core.envelope import encode_key, fingerprint
from envcat.core.schemas.passkeys import PasskeyAssertion
from envcat.core.schemas.requests import (
    POLL_INTERVAL_SECONDS,
    AccessRequestCreate,
    AccessRequestCreated,
    AccessRequestView,
    ClientContext,
    ServerKey,
    ServerKeys,
    WaitResult,
)
from envcat.core.wire import POLL_TOKEN_HEADER, REQUEST_ID_RE
from envcat.services import (
    approvers,
    audit,
    decision_rules,
    grants,
    integrity,
    metrics,
    passkey_approvals,
    phrases,
    requesters,
    workload_access,
    workspaces,
)
from envcat.services.access_requests import delivery, store, wakeups
from envcat.services.errors import (
    Conflict,
    ExpiredToken,
    InvalidPollToken,
    NotFound,
    RateLimited,
    SlowDown,
    Unavailable,
)
from envcat.services.runtime import current
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.requests")
CLI_ACTOR = "cli"
# A long poll with nothing to report answers "pending" up to this share of its timeout
# early (at most EARLY_MAX_SECONDS): polls that began together (a fleet of CI jobs at the
# top of the hour, CLIs reconnecting after a restart) then fall due over a few seconds,
# not in one instant that two cores cannot answer in time. A CLI polls again at once.
EARLY_SHARE = 0.1
EARLY_MAX_SECONDS = 2.0


@dataclass(frozen=True)
class AcceptedApproval:
    """An approval recorded in Redis; the task carries the request id and the MAC only."""

    request_id: str
    approval: store.Approval
    mac: str
    notice: bool = False  # the workspace has a channel for the decision's notice


def _is_request_id(request_id: str) -> bool:
    return REQUEST_ID_RE.fullmatch(request_id) is not None


def create(body: AccessRequestCreate, client_ip: str) -> AccessRequestCreated:
    """Store a new pending request for a workspace; the poll token is returned here only.

    Raises UnknownWorkspace (404) for an unknown slug, or RateLimited (429) when
    `client_ip` already holds MAX_PENDING_PER_IP undecided requests.
    """
    workspace = workspaces.resolve(body.workspace)
    requesters.refuse_early(workspace.id, body.bundle, body.bundle_id, None)  # issue #17
    _, created = store_request(body, workspace, client_ip, body.context.model_dump())
    return created


def store_request(
    body: AccessRequestCreate,
    workspace: workspaces.Workspace,
    client_ip: str,
    context: dict[str, object],
) -> tuple[store.NewRequest, AccessRequestCreated]:
    """Store a pending request with this display context; the poll token is in the reply."""
    settings = current().settings
    new = store.new_request(settings.request_ttl)
    mac = integrity.request_mac(
        new, cli_pub=body.client_pubkey, tenant_id=workspace.id, workspace=workspace.slug
    )
    request = store.create(
        current().redis,
        new,
        ttl=settings.request_ttl,
        cli_pub=body.client_pubkey,
        tenant_id=workspace.id,
        workspace=workspace.slug,
        mac=mac,
        client_ip=client_ip,
        max_per_ip=settings.max_pending_per_ip,
        bundle=body.bundle,
        bundle_id=body.bundle_id,
        template_keys=body.template_keys,
        context=context,
    )
    if request is None:
        raise RateLimited(
            f"Too many pending requests from this address (at most "
            f"{settings.max_pending_per_ip}); finish or cancel one first.",
            details=POLL_INTERVAL_SECONDS * 6,
        )
    metrics.REQUESTS_CREATED.inc()
    approve_uri = settings.public_url.rstrip("/") + "/approve"
    return new, AccessRequestCreated(
        id=request.id,
        poll_token=new.poll_token,
        user_code=request.user_code,
        verification_uri=approve_uri,
        verification_uri_complete=f"{approve_uri}/{request.id}",
        interval=POLL_INTERVAL_SECONDS,
        expires_in=settings.request_ttl,
    )


def server_keys() -> ServerKeys:
    """The delivery signing keys' public halves (GET /server-key); 503 when none is configured."""
    keys = current().settings.server_public_keys()
    if not keys:
        raise Unavailable("This server has no delivery signing key configured.")
    listed = [ServerKey(public_key=encode_key(key), fingerprint=fingerprint(key)) for key in keys]
    return ServerKeys(
        public_key=listed[0].public_key, fingerprint=listed[0].fingerprint, keys=listed
    )


def describe(request_id: str) -> AccessRequestView:
    """What the approval page shows; NotFound when unknown, expired or delivered."""
    request = store.get(current().redis, request_id) if _is_request_id(request_id) else None
    if request is None:
        raise NotFound("No such request, or it has expired.")
    return AccessRequestView(
        id=request.id,
        status=request.status,
        workspace=request.workspace,
        user_code=phrases.shown(request),  # hidden where approvers must type it
        template_keys=request.template_keys,
        bundle=request.bundle,
        bundle_id=request.bundle_id,
        context=ClientContext.model_validate(request.context),
        created=request.created,
        expires_at=request.expires_at,
        workload=request.context.get("workload") or None,
        requester=request.context.get(store.REQUESTER_FIELD) or None,
        kind="login" if request.context.get(store.KIND_FIELD) == "login" else "values",
        device=grants.device_of(request.id, request.cli_pub),
    )


def _take(request_id: str, poll_token: str, hold: store.Hold | None = None) -> store.PollResult:
    result = store.take(current().redis, request_id, poll_token, hold=hold)
    if result.status == "gone":
        raise ExpiredToken("The request expired, was already delivered, or never existed.")
    if result.status == "bad_token":
        raise InvalidPollToken("Wrong poll token for this request.")
    return result


def answer_early(timeout: float) -> float:
    """How long before its `timeout` a pending long poll answers: at random, up to a tenth
    of it and at most EARLY_MAX_SECONDS."""
    spread = min(timeout * EARLY_SHARE, EARLY_MAX_SECONDS)
    return random.uniform(0.0, spread)  # noqa: S311  # jitter, not a secret


def _long_poll(
    request_id: str, poll_token: str, timeout: int, is_listening: Callable[[], bool]
) -> store.PollResult:
    """Take, and if still pending wait for a wake-up (no sleep loop) until final or `timeout`
    (a little before it, spread at random: EARLY_SHARE).

    The poll registers with the process's wake-up hub before it takes, so a wake-up
    published after the take reaches it (wakeups.py). One long poll per request takes
    the payload: a newer wait (a CLI that reconnected) replaces this one, which then
    answers "pending" and takes nothing.
    """
    with current().wakeups.waiting(request_id) as waiter:
        hold = store.Hold.new(secrets.token_urlsafe(8), timeout)
        result = _take(request_id, poll_token, hold)  # claims the request while pending
        votes_seen = result.votes
        deadline = time.monotonic() + timeout - answer_early(timeout)
        while result.status == "pending" and (remaining := deadline - time.monotonic()) > 0:
            wake = waiter.next(remaining)
            if wake is None:
                break  # nothing happened: still pending (or silently expired; the next poll says)
            if not is_listening():
                # The poller hung up while we waited (e.g. a restarted bff): taking the
                # payload now would hand it to nobody.
                break
            result = _take(request_id, poll_token, hold.after_wake())
            if result.replaced or wake is wakeups.Wake.PROGRESS or result.votes > votes_seen:
                # A newer poll (the CLI reconnected) takes instead, or news while still
                # pending (a k-of-n vote): answer now. A new vote is news however the
                # poll woke: one published while this process's subscription was
                # starting reached nobody, and only the recheck that follows sees it.
                break
    return result


def wait(
    request_id: str,
    poll_token: str,
    timeout: int,
    origin: audit.Origin,
    is_listening: Callable[[], bool] = lambda: True,
    defer: Callable[[Callable[[], None]], None] = lambda work: work(),
) -> WaitResult:
    """One poll by the CLI: pending, or the final state exactly once (then the request is gone).

    `is_listening` tells a long poll whether its caller is still connected. `defer` runs
    the delivery's audit append: the api passes "after the reply is sent", so the CLI
    does not wait for it (the values were taken already; audit-before-release is the
    approval's event, committed before the worker was asked).
    """
    if not poll_token:
        raise InvalidPollToken(f"The {POLL_TOKEN_HEADER} header is required.")
    if not _is_request_id(request_id):
        raise ExpiredToken("The request expired, was already delivered, or never existed.")
    if timeout > 0:
        result = _long_poll(request_id, poll_token, timeout, is_listening)
    else:
        result = _take(request_id, poll_token)
        too_fast = result.status == "pending" and store.is_polling_too_fast(
            current().redis, request_id, POLL_INTERVAL_SECONDS
        )
        if too_fast:
            raise SlowDown(f"Poll at most every {POLL_INTERVAL_SECONDS} s, or long-poll.")
    if result.status == "ready":
        _count_delivery(result.approval)
        defer(functools.partial(_record_delivery, request_id, result.approval, origin))
    counted = approvers.progress(request_id) if result.has_votes else None
    return WaitResult(
        status=result.status,  # gone and bad_token were raised by _take
        ciphertext_base64=result.ciphertext,
        message=result.message,
        approvals=counted[0] if counted else None,
        approvals_required=counted[1] if counted else None,
    )


def _count_delivery(approval: store.Approval | None) -> None:
    metrics.REQUESTS_DELIVERED.inc()
    if approval is not None:
        metrics.APPROVAL_TO_DELIVERY.observe(max(0.0, time.time() - approval.approved_at))


def _record_delivery(
    request_id: str, approval: store.Approval | None, origin: audit.Origin
) -> None:
    if approval is None:
        return
    # The request is already taken: a database outage must not destroy the only copy of
    # the ciphertext, so the CLI has it already and the ledger logs any gap. A burst's
    # deliveries share units of work (issue #22).
    current().deliveries.record(
        approval.tenant_id,
        audit.Entry(
            CLI_ACTOR,
            "request.delivered",
            request_id,
            details={"approved_by": approval.decided_by, "bundle_id": approval.bundle_id},
            origin=origin,
        ),
    )


def cancel(request_id: str, poll_token: str, origin: audit.Origin) -> None:
    """Delete a request for its CLI; audited in its workspace."""
    if not poll_token:
        raise InvalidPollToken(f"The {POLL_TOKEN_HEADER} header is required.")
    if not _is_request_id(request_id):
        raise ExpiredToken("The request expired, was already delivered, or never existed.")
    cancellation = store.cancel_request(current().redis, request_id, poll_token)
    if cancellation.outcome == "gone":
        raise ExpiredToken("The request expired, was already delivered, or never existed.")
    if cancellation.outcome == "bad_token":
        raise InvalidPollToken("Wrong poll token for this request.")
    metrics.REQUESTS_CANCELLED.inc()
    if (approval := cancellation.approval) is not None:
        audit.record(
            approval.tenant_id,
            CLI_ACTOR,
            "request.cancelled",
            request_id,
            details={"approved_by": approval.decided_by, "bundle_id": approval.bundle_id},
            origin=origin,
        )


def decidable(request_id: str, tenant_id: str) -> store.AccessRequest:
    """The pending request, if it is for `tenant_id`; another workspace's is NotFound too."""
    request = store.get(current().redis, request_id) if _is_request_id(request_id) else None
    if request is None or request.tenant_id != tenant_id:
        raise NotFound("No such request, or it has expired.")
    if request.status != "pending" or request.approval is not None:
        raise Conflict("This request has already been decided.")
    return request


def approve(
    request_id: str,
    *,
    tenant_id: str,
    user_id: str,
    bundle_id: str,
    include_keys: list[str],
    origin: audit.Origin,
    workload: workload_access.WorkloadGrant | None = None,
    passkey: PasskeyAssertion | None = None,
    role: str | None = None,
    break_glass: str = "",
    grant_hours: int | None = None,
    phrase: str | None = None,
) -> AcceptedApproval:
    """Validate and record an approval, audited; the caller then enqueues the task.

    Raises NotFound (request of another workspace, or bundle), Conflict (already
    decided) or ValidationFailed (keys). Nothing is left behind when the audit
    write fails. `break_glass` (an owner's reason, checked by envcat.services.break_glass)
    skips the bundle's approver rules and k-of-n, and is audited `request.break_glass`.
    `phrase` is what a person typed where the workspace requires it (services.phrases).
    """
    r = current().redis
    request = decidable(request_id, tenant_id)
    if request.context.get(store.KIND_FIELD) == "login":
        raise Conflict("This request signs a terminal in; it releases no values.")
    selection = delivery.select_keys(tenant_id, bundle_id, include_keys)
    # issue #22: the workspace's and bundle's rules in one statement, inside this unit, for
    # a person or a device grant; a workload's standing approval consults none of them
    rules = (
        decision_rules.read(tenant_id, selection.bundle_id)
        if workload is None or workload.kind == "grant"
        else None
    )
    person = rules if workload is None else None
    if person is not None:  # a person types the terminal's phrase where the workspace says so
        phrases.check(request, phrase, required=person.require_phrase)
    rule = None
    if person is not None and not break_glass:  # a person: the bundle's approver rules (#17)
        rule = approvers.require_approver(
            tenant_id, user_id, selection.bundle_id, role, rule=person.approvers
        )
        approvers.refuse_self_approval(rule, request, user_id)
    if rules is not None and not break_glass:  # a person or a grant: who may request
        requesters.require(tenant_id, selection.bundle_id, request, rules.requesters)
    device = None  # issue #17: a grant is checked before anything is recorded
    if grant_hours is not None and workload is None:
        trusted = grants.device_of(request_id, request.cli_pub)
        device = grants.check_grant(
            tenant_id, selection.bundle_id, trusted, grant_hours, break_glass=bool(break_glass)
        )
    # issue #20: verified here (for every voter of a k-of-n rule), recorded under the
    # approval MAC, carried into the envelope. A workload's approval carries none: a CLI
    # that lists approvers refuses it.
    proof = (
        passkey_approvals.approval_proof(
            request,
            user_id,
            selection.bundle_id,
            selection.names,
            passkey,
            break_glass=break_glass,
            required=person.require_passkey,
        )
        if person is not None
        else ""
    )
    if break_glass:  # an owner alone, past the rules (issue #17)
        voters, proofs = [user_id], proof
    elif workload is None:  # k-of-n: before the k-th approver this raises AwaitingApprovals
        bundle = (selection.bundle_id, selection.bundle_name)
        votes = approvers.quorum(request, user_id, bundle, selection.names, origin, rule, proof)
        voters = [vote.user_id for vote in votes]
        # issue #20: every voter's proof, so the terminal can check k of them
        proofs = passkey_approvals.combined_proof([vote.passkey for vote in votes])
    else:  # a workload: its automatic trust policy is the admins' standing approval (#16)
        voters, proofs = [workload.label], ""
    approval = store.Approval(
        tenant_id=tenant_id,
        decided_by=user_id,
        bundle_id=selection.bundle_id,
        include_keys=tuple(selection.names),
        approved_at=time.time(),
        via=workload.label if workload is not None else "",
        passkey=proofs,
        break_glass=break_glass,
    )
    mac = integrity.approval_mac(request, approval)
    if not store.mark_approved(r, request_id, approval=approval, mac=mac):
        raise Conflict("This request has already been decided.")
    details: dict[str, object] = {
        "bundle_id": selection.bundle_id,
        "bundle_name": selection.bundle_name,
        "keys": selection.names,
        **({"approvers": voters} if len(voters) > 1 else {}),
        **({"passkey": json.loads(proof)["credential_id"]} if proof else {}),
        **({"requested_by": requester} if (requester := request.context.get("requester")) else {}),
        **({"break_glass": True, "reason": break_glass} if break_glass else {}),
    }
    if (
        break_glass
        and person is not None
        and requesters.refuses(tenant_id, selection.bundle_id, request, person.requesters)
    ):
        details["requesters_overridden"] = True  # an owner passed over "members only" (#17)
    if workload is not None and workload.kind == "oidc":  # names the workload, policy, keys
        details.update(policy_id=workload.policy_id, policy=workload.policy_name)
    elif workload is not None and workload.kind == "grant":  # issue #17
        details.update(grant_id=workload.policy_id, granted_by=workload.policy_name)
    elif workload is not None:
        details.update(token_id=workload.policy_id, token=workload.policy_name)
    try:
        # One unit of work, committed before the caller queues the release: the grant
        # first, the events last (the chain head stays locked until the commit).
        with transaction():
            granted: dict[str, object] = {}
            if device is not None and grant_hours is not None:  # committed with the event
                made = grants.stage(
                    tenant_id,
                    selection.bundle_id,
                    device,
                    selection.names,
                    user_id,
                    voters,
                    request_id,
                    grant_hours,
                    request.context.get(store.REQUESTER_ID_FIELD) or None,
                )
                granted = {"grant_id": made.id, "grant_hours": grant_hours, "device": device}
            if break_glass:  # first: no break-glass release without its own loud event
                audit.append(
                    tenant_id,
                    user_id,
                    "request.break_glass",
                    request_id,
                    details=details,
                    origin=origin,
                )
            audit.append(
                tenant_id,
                workload.label if workload is not None else user_id,
                "request.granted"
                if workload is not None and workload.kind == "grant"
                else "request.approved",
                request_id,
                details={**details, **granted},
                origin=origin,
            )
    except Exception:
        # Nothing was committed: give the Redis claim back, so the request is decidable again.
        store.release_approval(r, request_id)
        if workload is None:
            approvers.withdraw_vote(request_id, user_id)  # so the same person can try again
        raise
    metrics.REQUESTS_APPROVED.inc()
    return AcceptedApproval(request_id, approval, mac, notice=person is not None and person.notice)


def abandon(accepted: AcceptedApproval) -> None:
    """The approval could not be queued: fail the request so its CLI stops waiting."""
    delivery.fail(
        accepted.request_id,
        accepted.approval.tenant_id,
        accepted.approval.decided_by,
        "the approval could not be queued (server busy); ask again",
    )


def deny(request_id: str, *, tenant_id: str, user_id: str, origin: audit.Origin) -> None:
    """Refuse a request and wake its CLI; NotFound for another workspace's request."""
    decidable(request_id, tenant_id)
    if not store.mark_denied(current().redis, request_id, denied_by=user_id):
        raise Conflict("This request has already been decided.")
    metrics.REQUESTS_DENIED.inc()
    audit.record(tenant_id, user_id, "request.denied", request_id, origin=origin)
