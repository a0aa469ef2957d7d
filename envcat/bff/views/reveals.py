"""Reveal with post/redirect/get: the POST leaves a single-use ticket, the GET spends it.

The ticket names the key and the person, never the value, so nothing secret is
stored. The GET that redeems it asks the api for the value (the api audits
that, once); refreshing the page finds the ticket spent and shows the mask.
"""

from __future__ import annotations

import secrets

from envcat.bff.identity import Identity
from envcat.bff.runtime import runtime

PREFIX = "bff:reveal:"
TICKET_TTL_SECONDS = 60


def _owner(identity: Identity, key_id: str) -> str:
    return f"{identity.user_id}|{identity.tenant_id}|{key_id}"


def issue(identity: Identity, key_id: str) -> str:
    """A fresh ticket allowing one reveal of `key_id` by this person, for a minute."""
    token = secrets.token_urlsafe(18)
    runtime().redis.set(PREFIX + token, _owner(identity, key_id), ex=TICKET_TTL_SECONDS)
    return token


def redeem(identity: Identity, token: str, key_id: str | None = None) -> str | None:
    """The key id the ticket allows (spending it), or None if spent, expired or not theirs."""
    if not token or len(token) > 64 or not token.replace("-", "").replace("_", "").isalnum():
        return None
    stored = runtime().redis.getdel(PREFIX + token)
    if not isinstance(stored, str):
        return None
    user_id, tenant_id, ticket_key = [*stored.split("|", 2), "", ""][:3]
    if (user_id, tenant_id) != (identity.user_id, identity.tenant_id):
        return None
    if key_id is not None and ticket_key != key_id:
        return None
    return ticket_key
