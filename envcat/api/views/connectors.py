"""Signed endpoints: connector connections and links (issue #18). Thin: parse, authorise,
delegate, enqueue, reply. Credentials go in; they never come back out."""

from __future__ import annotations

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.connectors import (
    ConnectionCreate,
    ConnectionList,
    ConnectionOut,
    ConnectionUpdate,
    LinkCreate,
    LinkList,
    LinkListQuery,
    LinkOut,
    LinkUpdate,
    Queued,
)
from envcat.services.connectors import connections, links
from envcat.workers import connector_tasks
from envcat.workers.enqueue import enqueue

bp = signed_blueprint("connectors")
QUEUE_DOWN = "The task queue is unavailable; try again shortly."


@endpoint(
    bp,
    "/connections",
    "GET",
    summary="List the tenant's provider connections (admin+; never their credentials)",
    auth="signed",
    responses={200: ConnectionList},
    errors=(403,),
)
def list_connections() -> ConnectionList:
    """Admins see connections."""
    caller().require("admin")
    return connections.list_connections(caller().tenant_id)


@endpoint(
    bp,
    "/connections",
    "POST",
    summary="Add an AWS or GCP connection (credentials encrypted at rest, write-only)",
    auth="signed",
    body=ConnectionCreate,
    responses={201: ConnectionOut},
    errors=(403, 409),
)
def create_connection(body: ConnectionCreate) -> tuple[ConnectionOut, int]:
    """Admins add connections."""
    caller().require("admin")
    return connections.create(current_actor(), body), 201


@endpoint(
    bp,
    "/connections/<connection_id>",
    "GET",
    summary="One connection and its last test result",
    auth="signed",
    responses={200: ConnectionOut},
    errors=(403, 404),
)
def get_connection(connection_id: str) -> ConnectionOut:
    """Admins read connections."""
    caller().require("admin")
    return connections.out(connections.get(caller().tenant_id, connection_id))


@endpoint(
    bp,
    "/connections/<connection_id>",
    "PATCH",
    summary="Rename or reconfigure a connection, or replace its credentials",
    auth="signed",
    body=ConnectionUpdate,
    responses={200: ConnectionOut},
    errors=(403, 404, 409),
)
def update_connection(connection_id: str, body: ConnectionUpdate) -> ConnectionOut:
    """Admins edit connections."""
    caller().require("admin")
    return connections.update(current_actor(), connection_id, body)


@endpoint(
    bp,
    "/connections/<connection_id>",
    "DELETE",
    summary="Delete a connection and its links (nothing is deleted at the provider)",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def delete_connection(connection_id: str) -> tuple[str, int]:
    """Admins delete connections."""
    caller().require("admin")
    connections.delete(current_actor(), connection_id)
    return "", 204


@endpoint(
    bp,
    "/connections/<connection_id>/test",
    "POST",
    summary="Queue a test of the connection's credentials (result on the connection)",
    auth="signed",
    responses={202: Queued},
    errors=(403, 404),
)
def test_connection(connection_id: str) -> tuple[Queued, int]:
    """Admins test connections; a worker makes the provider call."""
    caller().require("admin")
    tenant_id = caller().tenant_id
    connection = connections.request_test(current_actor(), connection_id)
    enqueue(
        connector_tasks.test_connection,
        (tenant_id, connection.id),
        on_failure=lambda: None,
        message=QUEUE_DOWN,
    )
    return Queued(), 202


@endpoint(
    bp,
    "/links",
    "GET",
    summary="List the tenant's links with last and next sync (?bundle_id= for one bundle)",
    auth="signed",
    query=LinkListQuery,
    responses={200: LinkList},
    errors=(404,),
)
def list_links(query: LinkListQuery) -> LinkList:
    """Any role sees links and their status (never values)."""
    return links.list_links(caller().tenant_id, query.bundle_id)


@endpoint(
    bp,
    "/bundles/<bundle_id>/links",
    "GET",
    summary="The links of one bundle",
    auth="signed",
    responses={200: LinkList},
    errors=(404,),
)
def bundle_links(bundle_id: str) -> LinkList:
    """Any role sees a bundle's links."""
    return links.list_links(caller().tenant_id, bundle_id)


@endpoint(
    bp,
    "/links",
    "POST",
    summary="Link a bundle to a provider prefix: pull, push or two-way",
    auth="signed",
    body=LinkCreate,
    responses={201: LinkOut},
    errors=(403, 404),
)
def create_link(body: LinkCreate) -> tuple[LinkOut, int]:
    """Admins link bundles."""
    caller().require("admin")
    return links.create(current_actor(), body), 201


@endpoint(
    bp,
    "/links/<link_id>",
    "GET",
    summary="One link and its last sync",
    auth="signed",
    responses={200: LinkOut},
    errors=(404,),
)
def get_link(link_id: str) -> LinkOut:
    """Any role reads a link."""
    return links.link_out(caller().tenant_id, link_id)


@endpoint(
    bp,
    "/links/<link_id>",
    "PATCH",
    summary="Change a link's prefix, direction, mapping or schedule",
    auth="signed",
    body=LinkUpdate,
    responses={200: LinkOut},
    errors=(403, 404, 409),
)
def update_link(link_id: str, body: LinkUpdate) -> LinkOut:
    """Admins edit links."""
    caller().require("admin")
    return links.change(current_actor(), link_id, body)


@endpoint(
    bp,
    "/links/<link_id>",
    "DELETE",
    summary="Delete a link (the bundle and the provider keep their secrets)",
    auth="signed",
    responses={204: None},
    errors=(403, 404),
)
def delete_link(link_id: str) -> tuple[str, int]:
    """Admins delete links."""
    caller().require("admin")
    links.delete(current_actor(), link_id)
    return "", 204


@endpoint(
    bp,
    "/links/<link_id>/sync",
    "POST",
    summary="Sync a link now (queued on the connectors queue; 409 while one runs)",
    auth="signed",
    responses={202: Queued},
    errors=(403, 404, 409),
)
def sync_link(link_id: str) -> tuple[Queued, int]:
    """Admins start a sync."""
    caller().require("admin")
    tenant_id = caller().tenant_id
    run_id = links.start_run(tenant_id, link_id, current_actor())
    enqueue(
        connector_tasks.sync_link,
        (link_id, run_id),
        on_failure=lambda: links.abandon_run(link_id, run_id),
        message=QUEUE_DOWN,
    )
    return Queued(run_id=run_id), 202
