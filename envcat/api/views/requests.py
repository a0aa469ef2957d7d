"""Public request endpoints used by the CLI (DESIGN §5). Thin: parse, delegate, reply."""

from __future__ import annotations

import select
import socket

from flask import Blueprint, Response, jsonify, request

from envcat.api.backpressure import refuse_when_behind
from envcat.api.context import after_response, bearer_token, client_origin
from envcat.api.extensions import limiter
from envcat.api.openapi import endpoint
from envcat.api.views import team
from envcat.core.schemas.logins import USER_TOKEN_SCHEME
from envcat.core.schemas.requests import (
    AccessRequestCreate,
    AccessRequestCreated,
    AccessRequestView,
    ServerKeys,
    WaitQuery,
    WaitResult,
)
from envcat.core.wire import POLL_TOKEN_HEADER
from envcat.services.access_requests import device, lifecycle, login, machine
from envcat.services.errors import ValidationFailed
from envcat.services.runtime import current
from envcat.workers import tasks
from envcat.workers.enqueue import enqueue

bp = Blueprint("requests", __name__, url_prefix="/api/v1")


def _creation_limit() -> str:
    return current().settings.request_rate_limit


# A blueprint limit is checked before the view parses its body, so malformed calls
# count too; methods=["POST"] limits request creation, this blueprint's only POST.
limiter.limit(_creation_limit, methods=["POST"])(bp)


def _caller_connected() -> bool:
    """False once the caller has closed its connection (EOF readable on the socket)."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable or sock.recv(1, socket.MSG_PEEK) != b""
    except ValueError:  # e.g. a TLS socket, which cannot peek: assume the caller is there
        return True
    except OSError:  # reset by the peer
        return False


@endpoint(
    bp,
    "/requests",
    "POST",
    summary="Create an access request (the CLI)",
    auth="public",
    body=AccessRequestCreate,
    responses={201: AccessRequestCreated},
    errors=(400, 401, 403, 404, 429, 503),
)
def create_request(body: AccessRequestCreate) -> tuple[AccessRequestCreated | Response, int]:
    """Anyone may ask a workspace; only its approver's decision releases anything.

    With `id_token` (issue #16) a workspace's trust policy may approve at once, and with
    `Authorization: Bearer ect_…` a service token does; only then does the reply carry
    `workload_mode` and `workload`. With `Authorization: Bearer ecu_…` (a terminal
    signed in with `envcat login`, issue #17) the request names its requester. With a
    `device` block (issue #17) a live grant to that device may approve at once (`grant_id`).
    """
    refuse_when_behind("create")
    address = client_origin().ip or "unknown"
    bearer = bearer_token()
    if body.id_token is not None and bearer is not None:
        raise ValidationFailed("Send an ID token or a service token, not both.")
    if bearer is not None and bearer.startswith(USER_TOKEN_SCHEME + "_") and body.device:
        # signed in and signed by the device key (#17): a grant for this person may deliver
        created, accepted = device.create_for_device(
            body, address, client_origin(), user_token=bearer
        )
    elif bearer is not None and bearer.startswith(USER_TOKEN_SCHEME + "_"):  # signed in (#17)
        created, accepted = login.create_signed_in(body, bearer, address, client_origin()), None
        bearer = None  # a person's request: answered like an anonymous one
    elif bearer is not None:
        created, accepted = machine.create_for_service_token(body, bearer, address, client_origin())
    elif body.id_token is not None:
        created, accepted = machine.create_for_workload(body, address, client_origin())
    elif body.device is not None:  # issue #17: signed by a device key; a grant may deliver
        created, accepted = device.create_for_device(body, address, client_origin())
    else:
        created, accepted = lifecycle.create(body, address), None
    if accepted is None and (body.bundle or body.bundle_id):
        # a person decides: only a request naming a bundle notifies (issue #17)
        team.notify_new_request(created.id, address)
    if accepted is None:
        return jsonify(created.model_dump(mode="json", exclude_none=True)), 201
    # after the audit commit, as for a person's approval: the task re-reads everything
    enqueue(
        tasks.encrypt_from_bundle,
        (accepted.request_id, accepted.mac),
        on_failure=lambda: lifecycle.abandon(accepted),
        message="The task queue is unavailable; retry.",
    )
    return created, 201


@endpoint(
    bp,
    "/server-key",
    "GET",
    summary="The key deliveries are signed with (the CLI pins its fingerprint)",
    auth="public",
    responses={200: ServerKeys},
    errors=(503,),
)
def server_key() -> ServerKeys:
    """Primary key first; during a rotation the previous keys still sign and are listed."""
    return lifecycle.server_keys()


@endpoint(
    bp,
    "/requests/<request_id>/context",
    "GET",
    summary="Show a request to its approver (no poll token needed)",
    auth="public",
    responses={200: AccessRequestView},
    errors=(404,),
)
def request_context(request_id: str) -> AccessRequestView:
    """The approval page's view: phrase, hints, context and times."""
    return lifecycle.describe(request_id)


@endpoint(
    bp,
    "/requests/<request_id>/wait",
    "GET",
    summary="Long-poll a request's outcome (the ciphertext is handed out once)",
    auth="poll",
    query=WaitQuery,
    responses={200: WaitResult},
    errors=(401, 410),
)
def wait(request_id: str, query: WaitQuery) -> Response:
    """Pending, or the final state exactly once; 410 once it is gone."""
    result = lifecycle.wait(
        request_id,
        request.headers.get(POLL_TOKEN_HEADER, ""),
        query.timeout,
        client_origin(),
        is_listening=_caller_connected,
        defer=after_response,
    )
    return jsonify(result.model_dump(mode="json", exclude_none=True))


@endpoint(
    bp,
    "/requests/<request_id>",
    "DELETE",
    summary="Cancel a request (the CLI, on Ctrl-C)",
    auth="poll",
    responses={204: None},
    errors=(401, 410),
)
def cancel(request_id: str) -> tuple[str, int]:
    """Drop the request so nobody can approve what no one waits for."""
    lifecycle.cancel(request_id, request.headers.get(POLL_TOKEN_HEADER, ""), client_origin())
    return "", 204
