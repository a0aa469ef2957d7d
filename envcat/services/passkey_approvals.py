"""Approvals signed with a passkey (issue #20): the statement to sign, and its verification.

An approval's WebAuthn challenge is not random: it is the SHA-256 of the
approval statement (envcat.core.approval_statement), so the assertion proves
which request, terminal key, workspace, bundle, keys and phrase the person
approved, and for an owner's break-glass release the reason too (so an ordinary
approval's assertion cannot serve a break-glass release, nor the reverse, and no
server can change the reason a passkey signed); the request is decided once,
which makes a replay useless. The api checks the statement is exactly this
approval and the assertion with the `webauthn` library against the caller's own
passkey; the proof then goes into the approval record (under the approval MAC)
and, by the worker, into the signed envelope, where the CLI checks it against
the approvers it trusts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from webauthn import verify_authentication_response
from webauthn.helpers import bytes_to_base64url

from envcat.core.approval_statement import ApprovalStatement, StatementError
from envcat.core.passkeys import PasskeyProof
from envcat.core.schemas.passkeys import ApprovalChallenge, PasskeyAssertion
from envcat.core.wire import REQUEST_ID_RE
from envcat.models import Passkey, db, utcnow
from envcat.services import phrases
from envcat.services.access_requests import delivery, store
from envcat.services.errors import Conflict, NotFound, ValidationFailed
from envcat.services.passkeys import (
    BAD_INPUT,
    CEREMONY_TIMEOUT_MS,
    PasskeyRequired,
    owned,
    relying_party,
    requires_passkey,
    user_of,
)
from envcat.services.runtime import current

# An approval statement older than this, or from the future, is refused.
STATEMENT_MAX_AGE_SECONDS = 600
STATEMENT_MAX_SKEW_SECONDS = 60


def _pending(request_id: str, tenant_id: str) -> store.AccessRequest:
    is_id = REQUEST_ID_RE.fullmatch(request_id) is not None
    request = store.get(current().redis, request_id) if is_id else None
    if request is None or request.tenant_id != tenant_id:
        raise NotFound("No such request, or it has expired.")
    if request.status != "pending" or request.approval is not None:
        raise Conflict("This request has already been decided.")
    return request


def statement_for(
    request: store.AccessRequest,
    bundle_id: str,
    names: Sequence[str],
    decided_at: int,
    break_glass: str = "",
) -> ApprovalStatement:
    """The statement an approval of `names` from `bundle_id` for `request` must sign.

    `break_glass` is an owner's reason for a break-glass release, "" otherwise.
    """
    return ApprovalStatement.of(
        request_id=request.id,
        cli_public_key=request.cli_pub,
        workspace=request.workspace,
        bundle_id=bundle_id,
        keys=names,
        user_code=request.user_code,
        decided_at=decided_at,
        break_glass=break_glass,
    )


def challenge(
    request_id: str,
    tenant_id: str,
    user_id: str,
    bundle_id: str,
    include_keys: Sequence[str],
    break_glass: str = "",
    phrase: str | None = None,
) -> ApprovalChallenge:
    """What the approval page asks the passkey to sign for this choice of bundle and keys.

    With `break_glass` (the owner's validated reason) the statement is a break-glass
    release's, which only the break-glass endpoint accepts. Where the workspace requires
    the typed phrase, it is checked first: the statement carries the phrase and the CLI's
    key, and a wrong one must not cost the approver a passkey ceremony.
    """
    request = _pending(request_id, tenant_id)
    selection = delivery.select_keys(tenant_id, bundle_id, include_keys)
    phrases.check(request, phrase)
    statement = statement_for(
        request, selection.bundle_id, selection.names, int(time.time()), break_glass
    )
    rp_id, _ = relying_party()
    keys = owned(user_id)
    if not keys:
        raise PasskeyRequired("Register a passkey on your account page first.")
    return ApprovalChallenge(
        statement=statement.as_dict(),
        challenge=bytes_to_base64url(statement.challenge()),
        rp_id=rp_id,
        allow_credentials=[key.credential_id for key in keys],
        timeout_ms=CEREMONY_TIMEOUT_MS,
    )


def approval_proof(
    request: store.AccessRequest,
    user_id: str,
    bundle_id: str,
    names: Sequence[str],
    submitted: PasskeyAssertion | None,
    *,
    break_glass: str,
    required: bool | None = None,
) -> str:
    """The canonical proof JSON for the approval record, "" without a passkey.

    `break_glass` is the owner's reason of a break-glass release ("" for any other
    approval): the signed statement must carry exactly it. `required` is the
    workspace's passkey policy when the caller has read it already. Raises PasskeyRequired
    when the workspace requires a passkey and none came, and ValidationFailed when
    the statement is not exactly this approval or the assertion does not verify
    (signature, origin, RP id, UV flag, sign count) under one of the approver's own
    passkeys.
    """
    if submitted is None:
        if requires_passkey(request.tenant_id) if required is None else required:
            raise PasskeyRequired(
                "This workspace requires a passkey to approve. Register one on your "
                "account page, then approve again."
            )
        return ""
    try:
        given = ApprovalStatement.from_dict(submitted.statement)
    except StatementError as exc:
        raise ValidationFailed(f"The approval statement is malformed: {exc}.") from None
    expected = statement_for(request, bundle_id, names, given.decided_at, break_glass)
    if given != expected:
        raise ValidationFailed(_mismatch(given, expected))
    age = time.time() - given.decided_at
    if not -STATEMENT_MAX_SKEW_SECONDS <= age <= STATEMENT_MAX_AGE_SECONDS:
        raise ValidationFailed("The signed statement is too old; approve again.")
    return json.dumps(
        _verified(user_id, given, submitted.credential).as_dict(),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _mismatch(given: ApprovalStatement, expected: ApprovalStatement) -> str:
    """Why a signed statement is refused, without repeating any of its text."""
    if given.break_glass == expected.break_glass:
        return "The signed statement is not this approval; approve again."
    if not expected.break_glass:
        return "The passkey signed a break-glass release, not this approval; approve again."
    if not given.break_glass:
        return (
            "The passkey signed an ordinary approval, not this break-glass release; "
            "sign the release with its reason."
        )
    return "The passkey signed another break-glass reason than this one; sign the release again."


def combined_proof(proofs: Sequence[str]) -> str:
    """The approval record's passkey field for k-of-n voters' proofs (issue #20).

    "" without any, the one proof as before when there is one (single approvals keep
    their format), else canonical JSON of the list ordered by decision time.
    """
    given = [json.loads(proof) for proof in proofs if proof]
    if len(given) <= 1:
        return next((proof for proof in proofs if proof), "")
    given.sort(key=lambda proof: int(proof["statement"]["decided_at"]))  # stable: vote order
    return json.dumps(given, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _verified(
    user_id: str, statement: ApprovalStatement, credential: dict[str, Any]
) -> PasskeyProof:
    raw_id = credential.get("id")
    key = db.session.execute(
        select(Passkey).where(Passkey.credential_id == str(raw_id), Passkey.user_id == user_id)
    ).scalar_one_or_none()
    if key is None:
        raise ValidationFailed("That passkey is not one of yours; use a registered passkey.")
    rp_id, origin = relying_party()
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=statement.challenge(),
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=key.public_key,
            credential_current_sign_count=key.sign_count,
            require_user_verification=True,
        )
        response = credential["response"]
        proof = PasskeyProof(
            statement=statement,
            credential_id=key.credential_id,
            authenticator_data=str(response["authenticatorData"]),
            client_data_json=str(response["clientDataJSON"]),
            signature=str(response["signature"]),
            approver_email=user_of(user_id).email,
        )
    except BAD_INPUT:
        raise ValidationFailed("The passkey assertion does not verify; approve again.") from None
    # a counter that does not move forward (both zero: the authenticator keeps none) is a clone
    moved = db.session.execute(
        update(Passkey)
        .where(Passkey.id == key.id, Passkey.sign_count == key.sign_count)
        .values(sign_count=verified.new_sign_count, last_used_at=utcnow())
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult of an UPDATE
        db.session.rollback()
        raise ValidationFailed("The passkey was used concurrently; approve again.")
    db.session.commit()
    return proof
