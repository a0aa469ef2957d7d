"""Approver passkeys (issue #20): register, list, rename, remove; the workspace's policy.

A passkey is a WebAuthn credential (ES256 or EdDSA, user verification
required) whose relying party is the bff's public origin (PUBLIC_URL).
Registration challenges are random, single-use (GETDEL), short-lived and kept in
Redis under the user's id. Approving with a passkey: services.passkey_approvals.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from webauthn import (
    generate_registration_options,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, options_to_json_dict
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from envcat.core.passkeys import (
    PasskeyError,
    algorithm_name,
    key_fingerprint,
    load_public_key,
)
from envcat.core.schemas.passkeys import (
    ApproverList,
    ApproverOut,
    PasskeyList,
    PasskeyOut,
    PasskeyRegistration,
    WorkspacePolicyIn,
    WorkspacePolicyOut,
)
from envcat.models import Membership, Passkey, User, WorkspacePolicy, db
from envcat.services import audit, workspaces
from envcat.services.errors import Conflict, Forbidden, NotFound, ValidationFailed
from envcat.services.runtime import current
from envcat.services.transactions import transaction

ALGORITHMS = [COSEAlgorithmIdentifier.EDDSA, COSEAlgorithmIdentifier.ECDSA_SHA_256]
CHALLENGE_TTL_SECONDS = 300
CEREMONY_TIMEOUT_MS = 120_000
MAX_PASSKEYS_PER_USER = 20
APPROVER_ROLES = ("owner", "admin", "member")
BAD_INPUT = (WebAuthnException, KeyError, TypeError, ValueError, AttributeError, IndexError)


class PasskeyRequired(Forbidden):
    """The workspace requires a passkey assertion with every approval."""

    code = "passkey_required"


def relying_party() -> tuple[str, str]:
    """(rp id, origin) from PUBLIC_URL: the host, and scheme://host[:port]."""
    parts = urlsplit(current().settings.public_url)
    host = (parts.hostname or "localhost").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    return host, f"{parts.scheme}://{host}{port}"


def _challenge_key(user_id: str) -> str:
    return f"passkey:reg:{hashlib.sha256(user_id.encode()).hexdigest()[:32]}"


def user_of(user_id: str) -> User:
    """The live user; NotFound for an unknown or deleted one."""
    user = db.session.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("No such user.")
    return user


def owned(user_id: str) -> list[Passkey]:
    """The user's passkeys, oldest first."""
    return list(
        db.session.execute(
            select(Passkey).where(Passkey.user_id == user_id).order_by(Passkey.created_at)
        ).scalars()
    )


def registration_options(user_id: str) -> dict[str, Any]:
    """Options for navigator.credentials.create; the challenge is kept for one use."""
    user = user_of(user_id)
    rp_id, _ = relying_party()
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name="EnvCat",
        user_name=user.email,
        user_id=hashlib.sha256(user.id.encode("utf-8")).digest(),
        user_display_name=user.name or user.email,
        challenge=secrets.token_bytes(32),
        timeout=CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=_raw_id(key.credential_id)) for key in owned(user_id)
        ],
        supported_pub_key_algs=ALGORITHMS,
    )
    current().redis.set(
        _challenge_key(user_id), bytes_to_base64url(options.challenge), ex=CHALLENGE_TTL_SECONDS
    )
    return options_to_json_dict(options)


def _raw_id(credential_id: str) -> bytes:
    return base64url_to_bytes(credential_id)


def _out(key: Passkey) -> PasskeyOut:
    public = load_public_key(key.public_key)
    return PasskeyOut(
        id=key.id,
        name=key.name,
        credential_id=key.credential_id,
        algorithm=algorithm_name(public),
        fingerprint=key_fingerprint(public),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
    )


def register(user_id: str, tenant_id: str, body: PasskeyRegistration) -> PasskeyOut:
    """Verify the browser's attestation against the one-use challenge; store the passkey."""
    user_of(user_id)
    expected = current().redis.getdel(_challenge_key(user_id))
    if not expected:
        raise ValidationFailed("The passkey registration expired; start again.")
    if len(owned(user_id)) >= MAX_PASSKEYS_PER_USER:
        raise Conflict(f"At most {MAX_PASSKEYS_PER_USER} passkeys per account.")
    rp_id, origin = relying_party()
    try:
        verified = verify_registration_response(
            credential=body.credential,
            expected_challenge=base64url_to_bytes(str(expected)),
            expected_rp_id=rp_id,
            expected_origin=origin,
            require_user_verification=True,
            supported_pub_key_algs=ALGORITHMS,
        )
        public = load_public_key(verified.credential_public_key)
    except (*BAD_INPUT, PasskeyError):
        raise ValidationFailed("The passkey could not be verified; try again.") from None
    key = Passkey(
        user_id=user_id,
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=verified.credential_public_key,
        algorithm=-8 if algorithm_name(public) == "EdDSA" else -7,
        sign_count=verified.sign_count,
        name=body.name,
    )
    with transaction("This passkey is already registered."):
        db.session.add(key)
        db.session.flush()  # a duplicate credential is refused here; the id the event names
        audit.append(
            tenant_id,
            user_id,
            "passkey.registered",
            f"passkey:{key.id}",
            details={"name": key.name, "fingerprint": key_fingerprint(public)},
        )
    return _out(key)


def list_for(user_id: str) -> PasskeyList:
    """The user's passkeys, oldest first."""
    return PasskeyList(passkeys=[_out(key) for key in owned(user_id)])


def _mine(user_id: str, passkey_id: str) -> Passkey:
    key = db.session.get(Passkey, passkey_id)
    if key is None or key.user_id != user_id:
        raise NotFound("No such passkey.")
    return key


def rename(user_id: str, passkey_id: str, name: str) -> PasskeyOut:
    """Give one of the user's passkeys another name."""
    key = _mine(user_id, passkey_id)
    key.name = name
    db.session.commit()
    return _out(key)


def remove(user_id: str, tenant_id: str, passkey_id: str) -> None:
    """Delete one of the user's passkeys; audited."""
    key = _mine(user_id, passkey_id)
    details = {"name": key.name, "fingerprint": _out(key).fingerprint}
    with transaction():
        db.session.delete(key)
        audit.append(
            tenant_id, user_id, "passkey.removed", f"passkey:{passkey_id}", details=details
        )


def approvers(slug: str) -> ApproverList:
    """The passkeys of a workspace's approving members (public: names and public keys only)."""
    workspace = workspaces.resolve(slug)
    rows = db.session.execute(
        select(Passkey)
        .join(Membership, Membership.user_id == Passkey.user_id)
        .join(User, User.id == Passkey.user_id)
        .where(
            Membership.tenant_id == workspace.id,
            Membership.role.in_(APPROVER_ROLES),
            User.deleted_at.is_(None),
        )
        .order_by(Passkey.created_at)
    ).scalars()
    listed = []
    for key in rows:
        public = load_public_key(key.public_key)
        listed.append(
            ApproverOut(
                name=key.name,
                credential_id=key.credential_id,
                public_key=_b64(key.public_key),
                algorithm=algorithm_name(public),
                fingerprint=key_fingerprint(public),
            )
        )
    return ApproverList(workspace=workspace.slug, approvers=listed)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def requires_passkey(tenant_id: str) -> bool:
    """The workspace's `require_passkey` setting."""
    policy = db.session.get(WorkspacePolicy, tenant_id)
    return bool(policy and policy.require_passkey)


def policy_of(tenant_id: str) -> WorkspacePolicyOut:
    """The workspace's approval policy (the defaults when it never set one)."""
    policy = db.session.get(WorkspacePolicy, tenant_id)
    return WorkspacePolicyOut(
        require_passkey=bool(policy and policy.require_passkey),
        require_phrase=bool(policy and policy.require_phrase),
    )


def set_policy(tenant_id: str, user_id: str, body: WorkspacePolicyIn) -> WorkspacePolicyOut:
    """Change the settings the body gives, keep the others (the caller checked the owner
    role); audited with the resulting settings."""
    with transaction():
        policy = db.session.get(WorkspacePolicy, tenant_id)
        if policy is None:
            policy = WorkspacePolicy(
                tenant_id=tenant_id, require_passkey=False, require_phrase=False
            )
            db.session.add(policy)
        if body.require_passkey is not None:
            policy.require_passkey = body.require_passkey
        if body.require_phrase is not None:
            policy.require_phrase = body.require_phrase
        chosen = WorkspacePolicyOut(
            require_passkey=policy.require_passkey, require_phrase=policy.require_phrase
        )
        audit.append(
            tenant_id,
            user_id,
            "workspace.policy_changed",
            f"tenant:{tenant_id}",
            details=chosen.model_dump(),
        )
    return chosen
