"""Signed endpoints: the key library (DESIGN §5). Thin: parse, authorise, delegate, reply."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.bundles import (
    KeyCreate,
    KeyList,
    KeyListQuery,
    KeyOut,
    KeyQuery,
    KeyUpdate,
)
from envcat.services import keys

bp = signed_blueprint("keys")


@endpoint(
    bp,
    "/keys",
    "GET",
    summary="List the library (secret values masked)",
    auth="signed",
    query=KeyListQuery,
    responses={200: KeyList},
)
def list_keys(query: KeyListQuery) -> KeyList:
    """Any role may list keys."""
    return keys.list_keys(caller().tenant_id, query.q)


@endpoint(
    bp,
    "/keys",
    "POST",
    summary="Create a library key",
    auth="signed",
    body=KeyCreate,
    responses={201: KeyOut},
    errors=(403, 409),
)
def create_key(body: KeyCreate) -> tuple[KeyOut, int]:
    """Admins create keys."""
    caller().require("admin")
    return keys.create_key(current_actor(), body), 201


@endpoint(
    bp,
    "/keys/<key_id>",
    "GET",
    summary="One key; ?reveal=true returns a secret value in clear (audited, member+)",
    auth="signed",
    query=KeyQuery,
    responses={200: KeyOut},
    errors=(403, 404),
)
def get_key(key_id: str, query: KeyQuery) -> KeyOut:
    """Any role reads a masked key; revealing needs member."""
    if not query.reveal:
        return keys.key_out(caller().tenant_id, key_id)
    caller().require("member")
    return keys.reveal_key(current_actor(), key_id)


@endpoint(
    bp,
    "/keys/<key_id>",
    "PATCH",
    summary="Rename, re-value or re-describe a key",
    auth="signed",
    body=KeyUpdate,
    responses={200: KeyOut},
    errors=(403, 404, 409),
)
def update_key(key_id: str, body: KeyUpdate) -> KeyOut:
    """Admins edit keys."""
    caller().require("admin")
    return keys.update_key(current_actor(), key_id, body)


@endpoint(
    bp,
    "/keys/<key_id>",
    "DELETE",
    summary="Delete a key (detaches it from every bundle)",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def delete_key(key_id: str) -> tuple[str, int]:
    """Admins delete keys."""
    caller().require("admin")
    keys.delete_key(current_actor(), key_id)
    return "", 204
