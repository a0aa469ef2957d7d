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
    KeyVersionList,
    KeyVersionOut,
    KeyVersionQuery,
    Rollback,
)
from envcat.services import editors, keys, versions

bp = signed_blueprint("keys")


def _require_key_editor(key_id: str) -> None:
    """Issue #17: the edit rule of every bundle the key is part of."""
    who = caller()
    editors.require_key_editor(who.tenant_id, who.user_id, who.role, key_id)


@endpoint(
    bp,
    "/keys",
    "GET",
    summary="List the library, secret values masked (search, paged by ?limit= and ?cursor=)",
    auth="signed",
    query=KeyListQuery,
    responses={200: KeyList},
)
def list_keys(query: KeyListQuery) -> KeyList:
    """Any role may list keys."""
    return keys.list_keys(caller().tenant_id, query.q, limit=query.limit, cursor=query.cursor)


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
    _require_key_editor(key_id)
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
    _require_key_editor(key_id)
    keys.delete_key(current_actor(), key_id)
    return "", 204


@endpoint(
    bp,
    "/keys/<key_id>/versions",
    "GET",
    summary="The key's kept versions, newest first: time, author, size (never a value)",
    auth="signed",
    responses={200: KeyVersionList},
    errors=(404,),
)
def list_versions(key_id: str) -> KeyVersionList:
    """Any role may list versions; values stay on the server."""
    return versions.list_versions(caller().tenant_id, key_id)


@endpoint(
    bp,
    "/keys/<key_id>/versions/<int:number>",
    "GET",
    summary="One version; ?reveal=true returns its value in clear (audited, member+)",
    auth="signed",
    query=KeyVersionQuery,
    responses={200: KeyVersionOut},
    errors=(403, 404),
)
def get_version(key_id: str, number: int, query: KeyVersionQuery) -> KeyVersionOut:
    """Any role reads a version's metadata; revealing its value needs member."""
    if not query.reveal:
        return versions.version_out(caller().tenant_id, key_id, number)
    caller().require("member")
    return versions.reveal_version(current_actor(), key_id, number)


@endpoint(
    bp,
    "/keys/<key_id>/rollback",
    "POST",
    summary="Make an old version current again, as a new version equal to it (admin+, audited)",
    auth="signed",
    body=Rollback,
    responses={200: KeyVersionOut},
    errors=(403, 404, 409),
)
def rollback(key_id: str, body: Rollback) -> KeyVersionOut:
    """Admins roll back."""
    caller().require("admin")
    _require_key_editor(key_id)
    return versions.rollback(current_actor(), key_id, body.version)
