"""Signed endpoints: bundles (DESIGN §5). Thin: parse, authorise, delegate, reply."""

from __future__ import annotations

from flask import Response

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.bundles import (
    AttachKey,
    BundleCreate,
    BundleDetail,
    BundleKeyAdd,
    BundleKeysBulk,
    BundleList,
    BundleListQuery,
    BundleUpdate,
    ExportQuery,
    ImportPreview,
    ImportRequest,
    ImportResult,
    ImportUndone,
)
from envcat.services import bundle_imports, bundles, editors, versions

bp = signed_blueprint("bundles")


def _require_editor(bundle_id: str) -> None:
    """The bundle's edit rule (issue #17; default: admins and owners)."""
    who = caller()
    editors.require_editor(who.tenant_id, who.user_id, who.role, bundle_id)


@endpoint(
    bp,
    "/bundles",
    "GET",
    summary="List the tenant's bundles (search, paged by ?limit= and ?cursor=)",
    auth="signed",
    query=BundleListQuery,
    responses={200: BundleList},
)
def list_bundles(query: BundleListQuery) -> BundleList:
    """Any role may list bundles."""
    return bundles.list_bundles(caller().tenant_id, query.q, limit=query.limit, cursor=query.cursor)


@endpoint(
    bp,
    "/bundles",
    "POST",
    summary="Create a bundle",
    auth="signed",
    body=BundleCreate,
    responses={201: BundleDetail},
    errors=(403, 409),
)
def create_bundle(body: BundleCreate) -> tuple[BundleDetail, int]:
    """Admins create bundles."""
    caller().require("admin")
    return bundles.create_bundle(current_actor(), body), 201


@endpoint(
    bp,
    "/bundles/<bundle_id>",
    "GET",
    summary="A bundle with its keys (secret values masked)",
    auth="signed",
    responses={200: BundleDetail},
    errors=(404,),
)
def get_bundle(bundle_id: str) -> BundleDetail:
    """Any role may read a bundle; secret values stay masked."""
    return bundles.detail(caller().tenant_id, bundle_id)


@endpoint(
    bp,
    "/bundles/<bundle_id>",
    "PATCH",
    summary="Rename, re-describe or re-tag a bundle",
    auth="signed",
    body=BundleUpdate,
    responses={200: BundleDetail},
    errors=(403, 404, 409),
)
def update_bundle(bundle_id: str, body: BundleUpdate) -> BundleDetail:
    """Admins edit bundles."""
    _require_editor(bundle_id)
    return bundles.update_bundle(current_actor(), bundle_id, body)


@endpoint(
    bp,
    "/bundles/<bundle_id>",
    "DELETE",
    summary="Delete a bundle (its keys stay in the library)",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def delete_bundle(bundle_id: str) -> tuple[str, int]:
    """Admins delete bundles."""
    _require_editor(bundle_id)
    bundles.delete_bundle(current_actor(), bundle_id)
    return "", 204


@endpoint(
    bp,
    "/bundles/<bundle_id>/keys",
    "POST",
    summary="Attach a library key, or create one in the library and attach it",
    auth="signed",
    body=BundleKeyAdd,
    responses={201: BundleDetail},
    errors=(403, 404, 409),
)
def add_key(bundle_id: str, body: BundleKeyAdd) -> tuple[BundleDetail, int]:
    """Admins attach keys: `{key_id}` attaches, `{name, value}` creates and attaches."""
    _require_editor(bundle_id)
    if isinstance(body.root, AttachKey):
        return bundles.attach_key(current_actor(), bundle_id, body.root), 201
    return bundles.create_and_attach_key(current_actor(), bundle_id, body.root), 201


@endpoint(
    bp,
    "/bundles/<bundle_id>/bulk-keys",
    "POST",
    summary="Attach or detach many library keys at once: all of them or none (one audit event)",
    auth="signed",
    body=BundleKeysBulk,
    responses={200: BundleDetail},
    errors=(403, 404, 409),
)
def bulk_keys(bundle_id: str, body: BundleKeysBulk) -> BundleDetail:
    """Editors attach and detach keys (the bundle's edit rule, issue #17)."""
    _require_editor(bundle_id)
    return bundles.bulk_keys(current_actor(), bundle_id, body)


@endpoint(
    bp,
    "/bundles/<bundle_id>/keys/<key_id>",
    "DELETE",
    summary="Detach a key from a bundle (it stays in the library)",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def detach_key(bundle_id: str, key_id: str) -> tuple[str, int]:
    """Admins detach keys."""
    _require_editor(bundle_id)
    bundles.detach_key(current_actor(), bundle_id, key_id)
    return "", 204


@endpoint(
    bp,
    "/bundles/<bundle_id>/import",
    "POST",
    summary="Import .env or JSON content in one transaction",
    auth="signed",
    body=ImportRequest,
    responses={200: ImportResult},
    errors=(403, 404, 409),
)
def import_bundle(bundle_id: str, body: ImportRequest) -> ImportResult:
    """Admins import."""
    _require_editor(bundle_id)
    return bundle_imports.import_into_bundle(current_actor(), bundle_id, body)


@endpoint(
    bp,
    "/bundles/<bundle_id>/import/preview",
    "POST",
    summary="What an import would do, per key (new, changed, unchanged), writing nothing",
    auth="signed",
    body=ImportRequest,
    responses={200: ImportPreview},
    errors=(403, 404),
)
def preview_import(bundle_id: str, body: ImportRequest) -> ImportPreview:
    """Editors preview imports; no value (pasted or stored) is in the reply."""
    _require_editor(bundle_id)
    return bundle_imports.preview_import(caller().tenant_id, bundle_id, body)


@endpoint(
    bp,
    "/bundles/<bundle_id>/imports/<import_id>/undo",
    "POST",
    summary="Undo one import as a unit: restore the values it changed, remove what it added",
    auth="signed",
    responses={200: ImportUndone},
    errors=(403, 404, 409),
)
def undo_import(bundle_id: str, import_id: str) -> ImportUndone:
    """Admins undo imports; 409 and nothing changed when a key changed since."""
    _require_editor(bundle_id)
    return versions.undo_import(current_actor(), bundle_id, import_id)


@endpoint(
    bp,
    "/bundles/<bundle_id>/export",
    "GET",
    summary="Download the bundle as a .env or JSON file (audited)",
    auth="signed",
    query=ExportQuery,
    responses={200: None},
    errors=(403, 404),
)
def export_bundle(bundle_id: str, query: ExportQuery) -> Response:
    """Members and above export; the file holds values in clear."""
    caller().require("member")
    exported = bundles.export_bundle(current_actor(), bundle_id, query.format)
    response = Response(exported.body, content_type=exported.content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{exported.filename}"'
    return response
