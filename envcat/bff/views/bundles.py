"""Bundle pages: list, search, create; one bundle's keys, import and export."""

from __future__ import annotations

import base64
import binascii
import re

from flask import Blueprint, Response, flash, redirect, request
from markupsafe import Markup, escape

from envcat.bff import backend
from envcat.bff.backend import UpstreamError, api_path
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views import grants, requesters, reveals
from envcat.bff.views.forms import (
    MASK,
    checkbox,
    describe,
    page,
    page_params,
    submit,
    tags_field,
)
from envcat.core.schemas.accounts import AccountOut
from envcat.core.schemas.bundles import (
    BundleDetail,
    BundleList,
    ImportPreview,
    ImportResult,
    KeyList,
    KeyOut,
)
from envcat.core.schemas.groups import EditorsOut, GroupList
from envcat.core.schemas.team import ApproversOut, MemberList
from envcat.core.wire import PATH_ID_RE

bp = Blueprint("bundles", __name__)

# After these, a long value (a URL, a path) may wrap; never inside a word.
_SOFT_BREAK_AFTER = re.compile(r"(?<=[/.:?&=,;@])")
_WBR = Markup("<wbr>")
IMPORT_FORMATS = ("dotenv", "json")
EXPORT_FORMATS = {"dotenv": ".env", "json": ".json"}
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
LIBRARY_SHOWN = 500  # library keys offered to attach on a bundle page (the api's page maximum)


@bp.app_template_filter("softbreak")
def softbreak(value: object) -> Markup:
    """Escape a value and let it wrap after `/ . : ? & = , ; @` (a <wbr>), never mid-word."""
    return _WBR.join(escape(piece) for piece in _SOFT_BREAK_AFTER.split(str(value)))


def _bundle_path(bundle_id: str, suffix: str = "") -> str:
    return api_path("/api/v1/bundles/{bundle_id}", bundle_id=bundle_id) + suffix


def _back(bundle_id: str) -> str:
    return f"/bundles/{bundle_id}"


BUNDLE_NAME_HELP = (
    "A bundle name uses letters, digits, dots, dashes and underscores, with single slashes "
    "between parts, like production/api."
)


def _bundles_page(
    form: dict[str, str] | None = None, error: str | None = None, status: int = 200
) -> Response:
    query = request.args.get("q", "").strip()
    listed = backend.fetch(BundleList, "/api/v1/bundles", page_params(query))
    return page(
        "bundles.html",
        status,
        identity=current_identity(),
        bundles=listed.bundles,
        listed=listed,
        cursor=request.args.get("cursor", ""),
        q=query,
        form=form or {},
        error=error,
    )


@bp.get("/bundles")
@login_required
def index() -> Response:
    """Every bundle of the tenant, with a search box and the create form."""
    return _bundles_page()


def _create_problem(exc: UpstreamError) -> str:
    fields = {
        str(item.get("loc", [""])[-1])
        for item in (exc.details if isinstance(exc.details, list) else [])
        if isinstance(item, dict) and item.get("loc")
    }
    if exc.status == 400 and "name" in fields:
        return BUNDLE_NAME_HELP
    return describe(exc)


@bp.post("/bundles")
@login_required
def create() -> Response:
    """Create a bundle and open it."""
    body = {
        "name": request.form.get("name", "").strip(),
        "description": request.form.get("description", ""),
        "tags": tags_field(),
    }
    try:
        created = backend.send_as(BundleDetail, "POST", "/api/v1/bundles", ok=(201,), json=body)
    except UpstreamError as exc:
        if exc.status == 401:
            raise
        # Render (not redirect) so the typed name, description and tags stay in the form.
        typed = {field: request.form.get(field, "") for field in ("name", "description", "tags")}
        return _bundles_page(typed, _create_problem(exc), 409 if exc.status == 409 else 400)
    flash(f"Created bundle {created.name}.", "success")
    return redirect(_back(created.id))  # type: ignore[return-value]


def _render(
    bundle_id: str,
    revealed: dict[str, str] | None = None,
    *,
    edit: dict[str, str] | None = None,
    edit_error: str | None = None,
    status: int = 200,
) -> Response:
    bundle = backend.fetch(BundleDetail, _bundle_path(bundle_id))
    attached = {key.id for key in bundle.keys}
    listed = backend.fetch(KeyList, "/api/v1/keys", {"limit": str(LIBRARY_SHOWN)})
    library = [k for k in listed.keys if k.id not in attached]
    # The CLI names the workspace (-w): show the command exactly as it must be typed.
    workspace = backend.fetch(AccountOut, "/api/v1/me").tenant.slug
    approvers = backend.fetch(ApproversOut, _bundle_path(bundle_id, "/approvers"))
    members = backend.fetch(MemberList, "/api/v1/members").members
    return page(
        "bundle.html",
        status,
        identity=current_identity(),
        bundle=bundle,
        edit=edit
        or {
            "name": bundle.name,
            "description": bundle.description,
            "tags": ", ".join(bundle.tags),
        },
        edit_error=edit_error,
        get_command=f"envcat get {bundle.name}" + (f" -w {workspace}" if workspace else ""),
        library=library,
        revealed=revealed or {},
        mask=MASK,
        approvers=approvers,
        approver_choices=[m for m in members if m.role != "viewer"],
        approver_groups=backend.fetch(GroupList, "/api/v1/groups").groups,  # issue #17
        editors=backend.fetch(EditorsOut, _bundle_path(bundle_id, "/editors")),
        **grants.bundle_grants(bundle_id),  # issue #17
        requesters=requesters.bundle_requesters(bundle_id),  # issue #17
    )


@bp.get("/bundles/<bundle_id>")
@login_required
def show(bundle_id: str) -> Response:
    """One bundle: its keys (secret values masked), every action on it, and a value
    revealed once by a reveal ticket (`?reveal=`)."""
    token = request.args.get("reveal", "")
    identity = current_identity()
    if not token or identity is None:
        return _render(bundle_id)
    key_id = reveals.redeem(identity, token)
    if key_id is None:
        flash("That value was shown once already. Press Reveal to see it again.", "success")
        return _render(bundle_id)
    try:
        path = api_path("/api/v1/keys/{key_id}", key_id=key_id)
        key = backend.fetch(KeyOut, path, {"reveal": "true"})
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return _render(bundle_id)
    return _render(bundle_id, {key_id: key.value or ""})


@bp.post("/bundles/<bundle_id>/keys/<key_id>/reveal")
@login_required
def reveal(bundle_id: str, key_id: str) -> Response:
    """Leave a reveal ticket and go to the GET page that spends it (post/redirect/get)."""
    identity = current_identity()
    if identity is None or not (PATH_ID_RE.fullmatch(bundle_id) and PATH_ID_RE.fullmatch(key_id)):
        raise UpstreamError(404, "not_found", "Not found.")
    token = reveals.issue(identity, key_id)
    return redirect(f"{_back(bundle_id)}?reveal={token}#value-{key_id}", 303)  # type: ignore[return-value]


@bp.post("/bundles/<bundle_id>/keys")
@login_required
def add_key(bundle_id: str) -> Response:
    """Create a key in the library and attach it to this bundle."""
    name = request.form.get("name", "").strip()
    body = {
        "name": name,
        "value": request.form.get("value", ""),
        "is_secret": checkbox("is_secret"),
        "description": request.form.get("description", ""),
        "required": checkbox("required"),
    }
    path = _bundle_path(bundle_id, "/keys")
    return submit("POST", path, json=body, back=_back(bundle_id), done=f"Added {name}.")


@bp.post("/bundles/<bundle_id>/attach")
@login_required
def attach(bundle_id: str) -> Response:
    """Attach a key from the library, optionally exported under another name ("Export as")."""
    body: dict[str, object] = {
        "key_id": request.form.get("key_id", ""),
        "required": checkbox("required"),
    }
    if alias := request.form.get("alias", "").strip():
        body["alias"] = alias
    path = _bundle_path(bundle_id, "/keys")
    return submit("POST", path, json=body, back=_back(bundle_id), done="Key attached.")


@bp.post("/bundles/<bundle_id>/keys/<key_id>/detach")
@login_required
def detach(bundle_id: str, key_id: str) -> Response:
    """Detach a key; it stays in the library."""
    path = api_path("/api/v1/bundles/{bundle}/keys/{key}", bundle=bundle_id, key=key_id)
    done = "Key detached (it is still in the library)."
    return submit("DELETE", path, back=_back(bundle_id), done=done)


@bp.post("/bundles/<bundle_id>/edit")
@login_required
def edit(bundle_id: str) -> Response:
    """Rename, describe or retag the bundle."""
    body = {
        "name": request.form.get("name", "").strip(),
        "description": request.form.get("description", ""),
        "tags": tags_field(),
    }
    try:
        backend.call("PATCH", _bundle_path(bundle_id), json=body)
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        # Render (not redirect) so what was typed stays in the form.
        typed = {field: request.form.get(field, "") for field in ("name", "description", "tags")}
        status = 409 if exc.status == 409 else 400
        return _render(bundle_id, edit=typed, edit_error=_create_problem(exc), status=status)
    flash("Bundle saved.", "success")
    return redirect(_back(bundle_id))  # type: ignore[return-value]


@bp.post("/bundles/<bundle_id>/delete")
@login_required
def delete(bundle_id: str) -> Response:
    """Delete the bundle; its keys stay in the library."""
    try:
        backend.call("DELETE", _bundle_path(bundle_id), ok=(204,))
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect(_back(bundle_id))  # type: ignore[return-value]
    flash("Bundle deleted; its keys are still in the library.", "success")
    return redirect("/bundles")  # type: ignore[return-value]


def _import_content() -> str | None:
    if sealed := request.form.get("content_b64"):  # re-submitted by the preview page
        try:
            return base64.b64decode(sealed, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        raw: bytes = upload.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return request.form.get("content", "")


@bp.post("/bundles/<bundle_id>/import")
@login_required
def import_values(bundle_id: str) -> Response:
    """Import a pasted or uploaded .env (or JSON) file in one transaction."""
    content = _import_content()
    fmt = request.form.get("format", "dotenv")
    if content is None or fmt not in IMPORT_FORMATS or not content.strip():
        flash("Paste the file or choose a UTF-8 .env or JSON file to import.", "error")
        return redirect(_back(bundle_id))  # type: ignore[return-value]
    body: dict[str, object] = {
        "format": fmt,
        "content": content,
        "overwrite": checkbox("overwrite"),
        "is_secret": checkbox("is_secret"),
    }
    if request.form.get("content_b64"):  # the preview's per-key choice of secret or plain
        body["secret_names"] = request.form.getlist("secret")
    try:
        result = backend.send_as(
            ImportResult, "POST", _bundle_path(bundle_id, "/import"), json=body
        )
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect(_back(bundle_id))  # type: ignore[return-value]
    flash(_import_summary(result), "success")
    return redirect(_back(bundle_id))  # type: ignore[return-value]


def _import_summary(result: ImportResult) -> str:
    parts = []
    for outcome, names in (
        ("created", result.created),
        ("updated", result.updated),
        ("unchanged", result.unchanged),
        ("skipped", result.skipped),
    ):
        listed = f" ({', '.join(names[:10])}{', …' if len(names) > 10 else ''})" if names else ""
        parts.append(f"{len(names)} {outcome}{listed}")
    return "Imported: " + "; ".join(parts) + "."


@bp.post("/bundles/<bundle_id>/export")
@login_required
def export(bundle_id: str) -> Response:
    """Download the bundle as .env or JSON (POST with CSRF: the api audits every export)."""
    fmt = request.form.get("format", "dotenv")
    if fmt not in EXPORT_FORMATS:
        fmt = "dotenv"
    try:
        upstream = backend.call("GET", _bundle_path(bundle_id, "/export"), params={"format": fmt})
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect(_back(bundle_id))  # type: ignore[return-value]
    response = Response(upstream.content, status=200)
    response.headers["Content-Type"] = upstream.headers.get("Content-Type", "text/plain")
    response.headers["Content-Disposition"] = upstream.headers.get(
        "Content-Disposition", f'attachment; filename="{_filename(bundle_id, fmt)}"'
    )
    return response


def _filename(bundle_id: str, fmt: str) -> str:
    return _FILENAME_UNSAFE.sub("_", bundle_id) + EXPORT_FORMATS[fmt]


@bp.post("/bundles/<bundle_id>/import/preview")
@login_required
def preview_import(bundle_id: str) -> Response:
    """Show what an import would do per key, writing nothing; the confirm form carries the
    pasted text back (base64 in a hidden field), so the bff keeps nothing between the two."""
    content = _import_content()
    fmt = request.form.get("format", "dotenv")
    if content is None or fmt not in IMPORT_FORMATS or not content.strip():
        flash("Paste the file or choose a UTF-8 .env or JSON file to import.", "error")
        return redirect(_back(bundle_id))  # type: ignore[return-value]
    options = {"overwrite": checkbox("overwrite"), "is_secret": checkbox("is_secret")}
    body = {"format": fmt, "content": content, **options}
    try:
        path = _bundle_path(bundle_id, "/import/preview")
        preview = backend.send_as(ImportPreview, "POST", path, json=body)
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect(_back(bundle_id))  # type: ignore[return-value]
    return page(
        "import_preview.html",
        identity=current_identity(),
        bundle=backend.fetch(BundleDetail, _bundle_path(bundle_id)),
        preview=preview,
        content_b64=base64.b64encode(content.encode("utf-8")).decode("ascii"),
        format=fmt,
        options=options,
    )


@bp.post("/bundles/<bundle_id>/bulk")
@login_required
def bulk(bundle_id: str) -> Response:
    """Attach or detach the ticked keys with one api call: all of them or none."""
    action = request.form.get("action", "")
    key_ids = request.form.getlist("key_ids")
    if action not in ("attach", "detach") or not key_ids:
        flash("Tick at least one key.", "error")
        return redirect(_back(bundle_id))  # type: ignore[return-value]
    body = {"action": action, "key_ids": key_ids}
    done = f"{len(key_ids)} key{'' if len(key_ids) == 1 else 's'} {action}ed."
    return submit(
        "POST", _bundle_path(bundle_id, "/bulk-keys"), json=body, back=_back(bundle_id), done=done
    )
