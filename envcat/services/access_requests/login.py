"""`envcat login` (issue #16) and requests from signed-in terminals (issue #17).

A login is an access request of kind "login": the same phrase, link, long poll and
cancel as `envcat get`. A member of the workspace who approves "sign in this
terminal" gets a user token minted for them (`user_tokens.issue`), sealed to the
CLI's X25519 key exactly as values are, and stored only as that ciphertext: a
link holder, a Redis reader or another poller cannot read it. A request made with a
user token names its requester, which the approval page and the audit log show
and a bundle's `no_self_approval` rule checks.
"""

from __future__ import annotations

import base64
import time

from envcat.core.schemas.logins import LoginCreate
from envcat.core.schemas.requests import AccessRequestCreate, AccessRequestCreated
from envcat.core.sealing import seal_values
from envcat.services import audit, phrases, user_tokens, workspaces
from envcat.services.access_requests import store
from envcat.services.access_requests.lifecycle import decidable, store_request
from envcat.services.errors import Conflict
from envcat.services.runtime import current
from envcat.services.tenancy import as_utc
from envcat.services.transactions import transaction


def create(body: LoginCreate, client_ip: str) -> AccessRequestCreated:
    """Store a pending sign-in request for a workspace; the poll token is in the reply."""
    workspace = workspaces.resolve(body.workspace)
    hints = AccessRequestCreate(client_pubkey=body.client_pubkey, workspace=body.workspace)
    context = {**body.context.model_dump(), store.KIND_FIELD: "login"}
    _, created = store_request(hints, workspace, client_ip, context)
    return created


def requester_context(
    body: AccessRequestCreate, token: str, workspace: workspaces.Workspace
) -> tuple[dict[str, object], str]:
    """The request's display context naming its requester, and the requester's user id;
    InvalidUserToken (401) unless the token is a live member's of this workspace."""
    who = user_tokens.resolve(token, workspace.id)
    context = {
        **body.context.model_dump(),
        store.REQUESTER_ID_FIELD: who.user_id,
        store.REQUESTER_FIELD: who.email or who.user_id,
    }
    return context, who.user_id


def record_requested(
    body: AccessRequestCreate, tenant_id: str, user_id: str, request_id: str, origin: audit.Origin
) -> None:
    """Audit `request.requested` under the signed-in requester."""
    details = {"bundle": body.bundle or body.bundle_id, "keys": list(body.template_keys)}
    audit.record(  # its own unit of work: the request itself lives in Redis
        tenant_id, user_id, "request.requested", request_id, details=details, origin=origin
    )


def create_signed_in(
    body: AccessRequestCreate, token: str, client_ip: str, origin: audit.Origin
) -> AccessRequestCreated:
    """A request whose terminal is signed in: it names its requester (audited)."""
    workspace = workspaces.resolve(body.workspace)
    context, requester = requester_context(body, token, workspace)
    _, created = store_request(body, workspace, client_ip, context)
    record_requested(body, workspace.id, requester, created.id, origin)
    return created


def sign_in(
    request_id: str,
    *,
    tenant_id: str,
    user_id: str,
    origin: audit.Origin,
    phrase: str | None = None,
) -> None:
    """Approve a login: mint the approver's token, seal it to the CLI, mark the request ready.

    NotFound for another workspace's request, Conflict for a request for values or one
    already decided, PhraseRequired/PhraseMismatch where the workspace requires the typed
    phrase and it is missing or wrong; a token nobody can receive is deleted again.
    """
    request = decidable(request_id, tenant_id)
    if request.context.get(store.KIND_FIELD) != "login":
        raise Conflict("This request asks for values, not to sign a terminal in.")
    phrases.check(request, phrase)  # before a token exists: nothing to undo
    with transaction():  # the token and its event, committed before the CLI can take it
        token, row = user_tokens.issue(tenant_id, user_id, request.context.get("hostname") or "")
        expires_at = as_utc(row.expires_at).isoformat()
        details = {"name": row.name, "prefix": row.prefix, "expires_at": expires_at}
        audit.append(
            tenant_id, user_id, "user_token.created", request_id, details=details, origin=origin
        )
    payload = {"token": token, "workspace": request.workspace, "expires_at": expires_at}
    sealed = seal_values(request.cli_pub, payload)
    approval = store.Approval(
        tenant_id=tenant_id,
        decided_by=user_id,
        bundle_id="",
        include_keys=(),
        approved_at=time.time(),
        via="login",
    )
    ciphertext = base64.b64encode(sealed).decode("ascii")
    if not store.mark_ready(
        current().redis, request_id, ciphertext_b64=ciphertext, approval=approval
    ):
        with transaction():  # nobody received it: gone again, and the log says so
            user_tokens.discard(row.id)
            audit.append(
                tenant_id,
                user_id,
                "user_token.discarded",
                request_id,
                details=details,
                origin=origin,
            )
        raise Conflict("This request has already been decided.")
