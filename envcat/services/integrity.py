"""Integrity of what Redis and the broker carry (issue #12, finding 1).

Redis and the broker are not trusted with decisions: a writer to either could
otherwise forge an approval record and a task message and have a worker seal
real values to a key of their choosing. So the api MACs (HMAC-SHA256) the
request's CLI key, poll-token hash and workspace when it creates the request,
and the approval record (bound to that first MAC) when it accepts a decision;
the task carries the approval MAC, and the worker checks both before it reads
a single key. Clerk provisioning messages carry a MAC of the Svix-verified event
data the same way, so a broker writer cannot swap a recorded event's data.

The MAC key is derived with HKDF-SHA256 from each BUNDLE_KMS_KEY entry: only
the api and the workers hold that keyring; Redis, the broker and the bff never
see it. The primary key MACs; every keyring key verifies, so a KMS rotation
does not fail requests in flight.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from envcat.services.access_requests.store import AccessRequest, Approval, NewRequest
from envcat.services.runtime import current

_INFO = b"envcat/request-integrity/v1"


@functools.lru_cache(maxsize=8)
def _mac_keys(keyring_setting: str) -> tuple[bytes, ...]:
    raw_keys = [
        base64.urlsafe_b64decode(entry.strip())
        for entry in keyring_setting.split(",")
        if entry.strip()
    ]
    return tuple(
        HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(raw)
        for raw in raw_keys
    )


def _keys() -> tuple[bytes, ...]:
    return _mac_keys(current().settings.kms_key_value())


def _mac(key: bytes, message: str) -> str:
    # HMAC-SHA256 truncated to 128 bits (RFC 2104 §5 allows it): a forgery still needs 2^128 tries
    digest = hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _verify(message: str, mac: str) -> bool:
    return any(hmac.compare_digest(_mac(key, message), mac) for key in _keys())


def _request_message(
    request_id: str,
    cli_pub: str,
    poll_token_hash: str,
    tenant_id: str,
    workspace: str,
    expires_at: float,
) -> str:
    return "|".join(
        (
            "req",
            "v1",
            request_id,
            cli_pub,
            poll_token_hash,
            tenant_id,
            workspace,
            f"{expires_at:.3f}",
        )
    )


def request_mac(new: NewRequest, *, cli_pub: str, tenant_id: str, workspace: str) -> str:
    """MAC of a new request: who may collect it (poll token), for which key and workspace."""
    message = _request_message(
        new.id, cli_pub, new.poll_token_hash, tenant_id, workspace, new.expires_at
    )
    return _mac(_keys()[0], message)


def is_request_intact(request: AccessRequest) -> bool:
    """True when the stored CLI key, poll-token hash and workspace are the api's own."""
    message = _request_message(
        request.id,
        request.cli_pub,
        request.poll_token_hash,
        request.tenant_id,
        request.workspace,
        request.expires_at,
    )
    return bool(request.mac) and _verify(message, request.mac)


def _approval_message(request: AccessRequest, approval: Approval) -> str:
    return "|".join(("approval", "v1", request.id, request.mac, approval.to_json()))


def approval_mac(request: AccessRequest, approval: Approval) -> str:
    """MAC of an approval, bound to the request's own MAC (and so to its CLI key)."""
    return _mac(_keys()[0], _approval_message(request, approval))


def is_approval_intact(request: AccessRequest, approval: Approval, mac: str) -> bool:
    """True when `approval` is exactly what the api accepted for this request."""
    return bool(mac) and _verify(_approval_message(request, approval), mac)


def _vote_message(request: AccessRequest, user_id: str, selection: str, proof: str) -> str:
    parts = ["vote", "v1", request.id, request.mac, user_id, selection]
    if proof:  # issue #20: the voter's passkey proof, so a Redis writer cannot swap it
        parts.append(hashlib.sha256(proof.encode("utf-8")).hexdigest())
    return "|".join(parts)


def vote_mac(request: AccessRequest, user_id: str, selection: str, proof: str = "") -> str:
    """MAC of one approver's vote towards a k-of-n approval (issue #17), bound to the request."""
    return _mac(_keys()[0], _vote_message(request, user_id, selection, proof))


def is_vote_intact(
    request: AccessRequest, user_id: str, selection: str, mac: str, proof: str = ""
) -> bool:
    """True when the vote is one the api recorded (a Redis writer cannot add votes)."""
    return bool(mac) and _verify(_vote_message(request, user_id, selection, proof), mac)


def device_mac(request_id: str, cli_pub: str, device: str) -> str:
    """MAC of the device that signed a request (issue #17): a Redis writer cannot swap in
    another device, whose key an approver's grant would then trust."""
    return _mac(_keys()[0], "|".join(("device", "v1", request_id, cli_pub, device)))


def is_device_intact(request_id: str, cli_pub: str, device: str, mac: str) -> bool:
    """True when the stored device of a request is the one the api verified."""
    return bool(mac) and _verify("|".join(("device", "v1", request_id, cli_pub, device)), mac)


def _event_message(event_id: str, event_type: str, data: Mapping[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "|".join(("clerk-event", "v1", event_id, event_type, canonical))


def event_mac(event_id: str, event_type: str, data: Mapping[str, Any]) -> str:
    """MAC of a Svix-verified Clerk event's data, which the provisioning task carries."""
    return _mac(_keys()[0], _event_message(event_id, event_type, data))


def is_event_intact(event_id: str, event_type: str, data: Mapping[str, Any], mac: str) -> bool:
    """True when a provisioning message's data is what the api verified and recorded."""
    return bool(mac) and _verify(_event_message(event_id, event_type, data), mac)
