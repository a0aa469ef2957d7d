"""Approvers type the verification phrase (RFC 8628 §5.4), a workspace policy.

Where the workspace's `require_phrase` is on, no page or JSON shows a pending request's
phrase, and every person's approval (ordinary, each k-of-n vote, break-glass, a terminal
sign-in) carries the phrase its terminal shows, typed by the approver. *Why:* a careless
approver who got a link from someone else (who ran `envcat get` and sent it) approves
without comparing phrases; one who must type it cannot. Workload and service-token
approvals have no person and no page, and are not asked.
"""

from __future__ import annotations

import hmac

from envcat.core.usercode import normalise
from envcat.models import WorkspacePolicy, db
from envcat.services.access_requests.store import AccessRequest
from envcat.services.errors import Forbidden, ValidationFailed


class PhraseRequired(ValidationFailed):
    """The workspace requires the approver to type the request's phrase."""

    code = "phrase_required"


class PhraseMismatch(Forbidden):
    """The typed phrase is not the request's."""

    code = "phrase_mismatch"


def requires_phrase(tenant_id: str) -> bool:
    """The workspace's `require_phrase` setting."""
    policy = db.session.get(WorkspacePolicy, tenant_id)
    return bool(policy and policy.require_phrase)


def shown(request: AccessRequest) -> str | None:
    """The phrase a page may show for this request: None where approvers must type it."""
    return None if requires_phrase(request.tenant_id) else request.user_code


def check(request: AccessRequest, typed: str | None, *, required: bool | None = None) -> None:
    """Refuse a person's decision whose typed phrase is missing (400) or wrong (403).

    A no-op where the workspace does not require it (`required`, when the caller has
    already read the policy; read here otherwise). Nothing is recorded either way.
    """
    if not (requires_phrase(request.tenant_id) if required is None else required):
        return
    if not typed or not typed.strip():
        raise PhraseRequired(
            "This workspace requires you to type the verification phrase the terminal "
            "shows (ask whoever ran the command to read it to you)."
        )
    expected = normalise(request.user_code).encode("utf-8")
    if not hmac.compare_digest(normalise(typed).encode("utf-8"), expected):
        raise PhraseMismatch(
            "That is not the phrase this request's terminal shows. Check it with whoever "
            "ran the command; if they did not ask, deny the request."
        )
