"""Importing a .env or JSON file into a bundle, and its preview (issue #15).

`plan` says what an import would do to each name; the import applies it in one
transaction and the preview shows it, so both classify every name the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select

from envcat.core.schemas.bundles import (
    ImportPreview,
    ImportPreviewKey,
    ImportRequest,
    ImportResult,
)
from envcat.models import Bundle, BundleKey, Key, db, new_uuid, utcnow
from envcat.services import bundles, dotenv_io, keys
from envcat.services.tenancy import Actor, get_bundle
from envcat.services.transactions import transaction

log = logging.getLogger("envcat.bundles")

Outcome = Literal["new", "attach", "changed", "unchanged", "clash"]


@dataclass(frozen=True)
class Planned:
    """One name of the file: `new` (no such key), `attach` (a library key with this value,
    not in the bundle), `changed`/`unchanged` (compared with the stored value, server-side),
    `clash` (another key is exported under this name here)."""

    name: str
    outcome: Outcome
    key: Key | None


def plan(
    values: dict[str, str],
    library: dict[str, Key],
    attached: set[str],
    exported: set[str],
    decrypt: Callable[[Key], str],
) -> list[Planned]:
    """Classify each name of the file, in file order."""
    planned = []
    for name, value in values.items():
        key = library.get(name)
        outcome: Outcome
        if (key is None or key.id not in attached) and name in exported:
            outcome = "clash"
        elif key is None:
            outcome = "new"
        elif decrypt(key) == value:
            outcome = "unchanged" if key.id in attached else "attach"
        else:
            outcome = "changed"
        planned.append(Planned(name, outcome, key))
    return planned


# The plan's outcomes as a preview names them (issue #15).
PREVIEW_STATUS = {
    "new": "new",
    "attach": "new",
    "changed": "changed",
    "unchanged": "unchanged",
    "clash": "skipped",
}


@dataclass(frozen=True)
class _ImportRun:
    """Who imports, and the id the import's versions and audit event carry."""

    author: str
    import_id: str


def _import_plan(
    bundle: Bundle, values: dict[str, str]
) -> tuple[list[Planned], set[str], set[str]]:
    """What importing `values` would do to each name; the bundle's key ids and exported names."""
    library = {
        k.name: k
        for k in db.session.execute(
            select(Key).where(Key.tenant_id == bundle.tenant_id, Key.name.in_(list(values)))
        ).scalars()
    }
    attached = set(
        db.session.execute(select(BundleKey.key_id).where(BundleKey.bundle_id == bundle.id))
        .scalars()
        .all()
    )
    exported = bundles.exported_names(bundle.id)
    return plan(values, library, attached, exported, keys.decrypt), attached, exported


def _apply_import(
    bundle: Bundle,
    values: dict[str, str],
    body: ImportRequest,
    result: ImportResult,
    run: _ImportRun,
) -> None:
    planned, attached, exported = _import_plan(bundle, values)
    position = bundles.next_position(bundle.id)
    for item in planned:
        name, key = item.name, item.key
        if item.outcome == "clash":
            # Another key is exported under this name here (an alias): two would clash.
            result.skipped.append(name)
            continue
        if key is None:
            is_secret = body.is_secret if body.secret_names is None else name in body.secret_names
            key = keys.new_key(
                bundle.tenant_id,
                name,
                values[name],
                is_secret=is_secret,
                description="",
                dangerous_ok=body.dangerous_ok,
                author=run.author,
                import_id=run.import_id,
            )
            result.created.append(name)
        elif item.outcome in ("unchanged", "attach"):
            (result.unchanged if key.id in attached else result.created).append(name)
        elif body.overwrite:
            keys.set_value(key, values[name], author=run.author, import_id=run.import_id)
            result.updated.append(name)
        else:
            # Attaching it would hand out the library's other value under this bundle.
            result.skipped.append(name)
            continue
        if key.id not in attached:
            bundles.attach_entry(bundle, key, required=False, position=position, exported=exported)
            position += 1


def preview_import(tenant_id: str, bundle_id: str, body: ImportRequest) -> ImportPreview:
    """What importing `body` would do, per name, without writing anything; never a value."""
    bundle = get_bundle(tenant_id, bundle_id)
    parsed = dotenv_io.parse(body.format, body.content)
    planned, _, _ = _import_plan(bundle, parsed.values)
    db.session.rollback()  # nothing to keep: a preview only reads
    return ImportPreview(
        keys=[
            ImportPreviewKey(
                name=item.name,
                status=PREVIEW_STATUS[item.outcome],
                in_library=item.key is not None,
                is_secret=item.key.is_secret if item.key is not None else body.is_secret,
                applies=item.outcome != "clash" and (item.outcome != "changed" or body.overwrite),
            )
            for item in planned
        ],
        skipped=list(parsed.skipped),
    )


def import_into_bundle(actor: Actor, bundle_id: str, body: ImportRequest) -> ImportResult:
    """Import .env or JSON content into a bundle in one transaction; never half-applied."""
    bundle = get_bundle(actor.tenant_id, bundle_id)
    parsed = dotenv_io.parse(body.format, body.content)
    result = ImportResult(created=[], updated=[], unchanged=[], skipped=list(parsed.skipped))
    run = _ImportRun(author=actor.user_id, import_id=new_uuid())
    with transaction("The library changed during the import; nothing was imported. Retry."):
        _apply_import(bundle, parsed.values, body, result, run)
        if result.updated:
            bundle.updated_at = utcnow()
        actor.append(
            "bundle.imported",
            f"bundle:{bundle.id}",
            {
                "bundle": bundle.name,
                "import_id": run.import_id,
                "format": body.format,
                "overwrite": body.overwrite,
                "created": result.created,
                "updated": result.updated,
                "unchanged": result.unchanged,
                "skipped_count": len(result.skipped),
            },
        )
    log.info(
        "bundle imported",
        extra={
            "bundle_id": bundle.id,
            "keys_created": len(result.created),
            "keys_updated": len(result.updated),
        },
    )
    return result
