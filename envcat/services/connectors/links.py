"""Links (issue #18): which bundle syncs with which provider prefix, and when.

A sync run has an id, set on the link when it is queued (`run_id`) and cleared when
it finishes. The id travels in the task message (ids only), names the key versions
and link items the run writes, and so makes a redelivered run resume, not repeat.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, select, update

from envcat.core.schemas.connectors import LinkCreate, LinkList, LinkOut, LinkUpdate
from envcat.models import Bundle, Connection, Link, db, new_uuid, utcnow
from envcat.services.connectors import connections
from envcat.services.errors import Conflict, NotFound
from envcat.services.tenancy import Actor, as_utc, get_bundle
from envcat.services.transactions import transaction


def _changed(statement: Executable) -> bool:
    """Run a conditional UPDATE; True when it matched a row."""
    return cast(CursorResult[Any], db.session.execute(statement)).rowcount > 0


# A queued run that has not finished after this long is presumed lost (its message
# dropped): the beat sweep may queue the link again.
STALE_RUN = timedelta(hours=1)


def _out(link: Link, connection: Connection, bundle: Bundle) -> LinkOut:
    return LinkOut(
        id=link.id,
        connection_id=connection.id,
        connection_name=connection.name,
        provider="aws" if connection.provider == "aws" else "gcp",
        bundle_id=bundle.id,
        bundle_name=bundle.name,
        prefix=link.prefix,
        direction=link.direction,
        expand_json=link.expand_json,
        mapping=dict(link.mapping or {}),
        interval_seconds=link.interval_seconds,
        next_sync_at=as_utc(link.next_sync_at) if link.next_sync_at else None,
        last_sync_at=as_utc(link.last_sync_at) if link.last_sync_at else None,
        last_status=link.last_status,
        last_error=link.last_error,
        last_summary=dict(link.last_summary or {}),
        running=link.run_id is not None,
    )


def get(tenant_id: str, link_id: str) -> Link:
    """The tenant's link, or NotFound (also for another tenant's id)."""
    link = db.session.execute(
        select(Link).where(Link.id == link_id, Link.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if link is None:
        raise NotFound("No such link.")
    return link


def link_out(tenant_id: str, link_id: str) -> LinkOut:
    """One link with its connection and bundle names."""
    link = get(tenant_id, link_id)
    return _out(
        link,
        connections.get(tenant_id, link.connection_id),
        get_bundle(tenant_id, link.bundle_id),
    )


def list_links(tenant_id: str, bundle_id: str | None = None) -> LinkList:
    """The tenant's links (of one bundle when given), by bundle and prefix."""
    statement = (
        select(Link, Connection, Bundle)
        .join(Connection, Connection.id == Link.connection_id)
        .join(Bundle, Bundle.id == Link.bundle_id)
        .where(Link.tenant_id == tenant_id)
        .order_by(Bundle.name, Link.prefix, Link.id)
    )
    if bundle_id is not None:
        get_bundle(tenant_id, bundle_id)
        statement = statement.where(Link.bundle_id == bundle_id)
    return LinkList(links=[_out(*row) for row in db.session.execute(statement).all()])


def create(actor: Actor, body: LinkCreate) -> LinkOut:
    """Link a bundle to a connection's prefix; both must be the caller's tenant's."""
    with transaction():
        connection = connections.get(actor.tenant_id, body.connection_id)
        bundle = get_bundle(actor.tenant_id, body.bundle_id)
        link = Link(
            id=new_uuid(),
            tenant_id=actor.tenant_id,
            connection_id=connection.id,
            bundle_id=bundle.id,
            prefix=body.prefix,
            direction=body.direction,
            expand_json=body.expand_json,
            mapping=dict(body.mapping),
            interval_seconds=body.interval_seconds,
            next_sync_at=utcnow(),
            last_status="never",
            last_error="",
            last_summary={},
        )
        db.session.add(link)
        actor.append(
            "link.created",
            f"link:{link.id}",
            {
                "bundle": bundle.name,
                "connection": connection.name,
                "prefix": link.prefix,
                "direction": link.direction,
            },
        )
    return _out(link, connection, bundle)


def change(actor: Actor, link_id: str, body: LinkUpdate) -> LinkOut:
    """Change a link's prefix, direction, mapping or schedule."""
    with transaction():
        link = get(actor.tenant_id, link_id)
        fields = sorted(body.model_fields_set)
        for field in fields:
            value = getattr(body, field)
            setattr(link, field, dict(value) if field == "mapping" else value)
        if link.expand_json and link.direction != "pull":
            raise Conflict("expand_json is for pull links only.")
        if "interval_seconds" in fields:
            link.next_sync_at = utcnow() + timedelta(seconds=link.interval_seconds)
        actor.append("link.updated", f"link:{link.id}", {"fields": fields})
    return link_out(actor.tenant_id, link.id)


def delete(actor: Actor, link_id: str) -> None:
    """Delete a link (nothing is deleted at the provider or in the bundle)."""
    with transaction():
        link = get(actor.tenant_id, link_id)
        db.session.delete(link)
        actor.append("link.deleted", f"link:{link_id}", {})


def start_run(tenant_id: str, link_id: str, actor: Actor | None = None) -> str:
    """Give the link a new run id (the task message carries it) and commit; 409 if running.
    A person's request (`actor`) is audited `link.sync_requested` in the same commit."""
    with transaction():
        get(tenant_id, link_id)
        run_id = new_uuid()
        claimed = _changed(
            update(Link)
            .where(Link.id == link_id, Link.run_id.is_(None))
            .values(run_id=run_id, last_status="queued")
        )
        if not claimed:
            raise Conflict("A sync of this link is already queued or running.")
        if actor is not None:
            actor.append("link.sync_requested", f"link:{link_id}", {"run_id": run_id})
    return run_id


def abandon_run(link_id: str, run_id: str) -> None:
    """Undo `start_run` when the task could not be queued (the broker is down)."""
    db.session.execute(
        update(Link)
        .where(Link.id == link_id, Link.run_id == run_id)
        .values(run_id=None, last_status="error", last_error="The task queue was unavailable.")
    )
    db.session.commit()


def claim_due(limit: int = 100) -> list[tuple[str, str]]:
    """Start a run on each link whose next sync is due; return (link id, run id) pairs.

    Each claim is a conditional UPDATE, so two beat sweeps never queue a link twice.
    Links whose queued run is older than STALE_RUN are claimed again.
    """
    now = utcnow()
    rows = db.session.execute(
        select(Link.id, Link.run_id, Link.updated_at)
        .where(Link.next_sync_at <= now)
        .order_by(Link.next_sync_at)
        .limit(limit)
    ).all()
    claimed: list[tuple[str, str]] = []
    for link_id, previous, updated_at in rows:
        if previous is not None and as_utc(updated_at) > now - STALE_RUN:
            continue
        run_id = new_uuid()
        same_run = Link.run_id.is_(None) if previous is None else Link.run_id == previous
        if _changed(
            update(Link)
            .where(Link.id == link_id, same_run)
            .values(run_id=run_id, last_status="queued")
        ):
            claimed.append((link_id, run_id))
    db.session.commit()
    return claimed
