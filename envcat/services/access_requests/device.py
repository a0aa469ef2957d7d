"""Requests signed by a device key (issue #17), and their delivery under a grant.

The signature is checked (fresh, unspent, over this very request) before anything is
stored; the device's fingerprint is then kept beside the request under the api's MAC,
for the approval page and for a grant. When a live grant of the workspace trusts this
device for the named bundle and the keys asked for, the request is approved at once
through the same path an automatic workload policy takes (`lifecycle.approve` with a
`WorkloadGrant`, then the view enqueues the sealing task); otherwise it waits for a
person as usual.
"""

from __future__ import annotations

import hashlib
import logging
import time

from envcat.core import device as device_keys
from envcat.core.schemas.requests import AccessRequestCreate
from envcat.services import audit, grants, requesters, workspaces
from envcat.services.access_requests import login
from envcat.services.access_requests.lifecycle import approve, store_request
from envcat.services.access_requests.machine import Created
from envcat.services.errors import EnvCatError
from envcat.services.runtime import current
from envcat.services.workload_access import WorkloadGrant

log = logging.getLogger("envcat.grants")


class InvalidDeviceSignature(EnvCatError):
    """A device block that is malformed, stale, spent, or not a signature over this request."""

    status, code = 401, "invalid_device_signature"


def verify_device(body: AccessRequestCreate) -> str:
    """The fingerprint of the device that signed this request body; 401 otherwise.

    Each signature is good once: replaying a request's body (and so its signature)
    within the time window is refused, and any other request needs a new signature.
    """
    proof = body.device
    assert proof is not None  # noqa: S101  # the caller checks
    if abs(proof.timestamp - time.time()) > device_keys.MAX_SKEW_SECONDS:
        raise InvalidDeviceSignature("The device signature is too old or from the future.")
    message = device_keys.request_message(
        client_pubkey=body.client_pubkey,
        workspace=body.workspace,
        bundle=body.bundle,
        bundle_id=body.bundle_id,
        template_keys=body.template_keys,
        timestamp=proof.timestamp,
    )
    try:
        raw = device_keys.verify(proof.public_key, proof.signature, message)
    except device_keys.DeviceKeyError:
        raise InvalidDeviceSignature("The device signature does not verify.") from None
    spent = hashlib.sha256(proof.signature.encode("ascii")).hexdigest()[:32]
    window = 2 * device_keys.MAX_SKEW_SECONDS + 5
    if not current().redis.set(f"devsig:{spent}", "1", nx=True, ex=window):
        raise InvalidDeviceSignature("This device signature was already used.")
    return device_keys.fingerprint(raw)


def create_for_device(
    body: AccessRequestCreate, client_ip: str, origin: audit.Origin, user_token: str | None = None
) -> Created:
    """Store a device-signed request; approve it at once when a live grant covers it.

    With `user_token` (a signed-in terminal) the request names its requester as
    `login.create_signed_in` does; on a members-only bundle only a grant made for the
    same requester applies (`requesters.grant_applies`).
    """
    workspace = workspaces.resolve(body.workspace)
    context: dict[str, object] = body.context.model_dump()
    requester = None
    if user_token is not None:
        context, requester = login.requester_context(body, user_token, workspace)
    device = verify_device(body)
    requesters.refuse_early(workspace.id, body.bundle, body.bundle_id, requester)
    _, created = store_request(body, workspace, client_ip, context)
    if requester is not None:
        login.record_requested(body, workspace.id, requester, created.id, origin)
    grants.remember_device(created.id, body.client_pubkey, device, created.expires_in)
    found = grants.find_usable(
        workspace.id,
        device,
        body.bundle,
        body.bundle_id,
        body.template_keys,
        accept=lambda grant: requesters.grant_applies(grant, requester),
    )
    if found is None:
        return created, None  # a person decides, as for any request
    grant, bundle_name = found
    keys = [key for key in grant.keys if not body.template_keys or key in body.template_keys]
    by = grants.approver_email(grant)
    label = f"grant:{grant.id[:8]} by {by}"[:128]
    standing = WorkloadGrant(
        policy_id=grant.id,
        policy_name=by,
        mode="automatic",
        label=label,
        bundle_id=grant.bundle_id,
        bundle_name=bundle_name,
        keys=tuple(keys),
        approver_id=grants.APPROVER_PREFIX + grant.id,
        kind="grant",
    )
    try:
        accepted = approve(
            created.id,
            tenant_id=workspace.id,
            user_id=standing.approver_id,
            bundle_id=grant.bundle_id,
            include_keys=keys,
            origin=origin,
            workload=standing,
        )
    except EnvCatError as exc:  # e.g. a granted key left the bundle: a person decides
        log.info("grant not applied", extra={"id": created.id, "reason": exc.code})
        return created, None
    reply = created.model_copy(
        update={"workload_mode": "automatic", "workload": label, "grant_id": grant.id}
    )
    return reply, accepted
