"""Calls from the bff's pages to the api, signed for the signed-in person."""

from __future__ import annotations

import string
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote

import httpx

from envcat.bff import metrics
from envcat.bff.apiclient import (
    ApiUnavailable,
    Relayed,
    Reply,
    Signer,
    answering_httpx,
    reply_as,
)
from envcat.bff.identity import caller_info, current_identity
from envcat.bff.runtime import runtime
from envcat.core import forwarding
from envcat.core.schemas.requests import AccessRequestView
from envcat.core.wire import PATH_ID_RE, REQUEST_ID_RE


class UpstreamError(Exception):
    """The api refused a page's call (4xx); the message is the api's, safe to show."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def api_path(template: str, **ids: str) -> str:
    """Fill `template`'s `{name}` fields with ids, each checked and quoted; 404 for a bad id.

    `api_path("/api/v1/keys/{key_id}", key_id=key_id)`: a value such as `x?reveal=true`,
    `a/b`, `x#y` or `..` never becomes part of the path the api sees.
    """
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    if fields != set(ids):
        raise ValueError(f"api_path: {template} needs exactly {sorted(fields)}")
    for value in ids.values():
        if not PATH_ID_RE.fullmatch(value):
            metrics.PROXY_REJECTED.labels("path").inc()
            raise UpstreamError(404, "not_found", "Not found.")
    return template.format(**{name: quote(value, safe="") for name, value in ids.items()})


def _client_headers(method: str, path: str) -> dict[str, str]:
    info = caller_info()
    if info.client_ip is None:
        return {}
    secret = runtime().settings.bff_shared_secret.get_secret_value()
    # The api sees the decoded path (werkzeug unquotes it); the proof binds that.
    target = unquote(path.partition("?")[0])
    return forwarding.client_headers(secret, info.client_ip, method, target)


def timed_relay(
    method: str,
    path: str,
    *,
    signer: Signer | None,
    kind: str,
    params: Mapping[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Relayed:
    """One api call with the caller's IP (with its proof), user agent and request id, timed.

    The reply comes as its bytes (the proxy's relay); `timed_send` answers with an
    httpx.Response (what pages read).
    """
    started = time.perf_counter()
    # The client address travels only with its proof, never as a bare X-Forwarded-For.
    caller = replace(caller_info(), client_ip=None)
    try:
        response = runtime().api.relay(
            method,
            path,
            signer=signer,
            caller=caller,
            params=params,
            json=json,
            content=content,
            headers={**(headers or {}), **_client_headers(method, path)},
        )
    except ApiUnavailable:
        metrics.API_UNAVAILABLE.inc()
        raise
    finally:
        metrics.API_CALL_SECONDS.labels(kind).observe(time.perf_counter() - started)
    return response


timed_send = answering_httpx(timed_relay)


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """An api error body (DESIGN §5: `error`, `message`, `details`); {} when it is not one."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def error_from(response: httpx.Response) -> UpstreamError | ApiUnavailable:
    """Turn an unexpected api reply into the exception a page handles.

    A 503 `busy` (the approval workers are behind, issue #22) is the api's own
    answer, with a message the page shows; any other 5xx means the api is away.
    """
    data = _error_body(response)
    busy = response.status_code == 503 and data.get("error") == "busy"
    if response.status_code >= 500 and not busy:
        metrics.API_UNAVAILABLE.inc()
        return ApiUnavailable(503, "The api is unavailable; retry in a moment.")
    return UpstreamError(
        response.status_code,
        str(data.get("error") or "error"),
        str(data.get("message") or "The request was refused."),
        data.get("details"),
    )


def call(
    method: str,
    path: str,
    *,
    ok: tuple[int, ...] = (200,),
    params: Mapping[str, str] | None = None,
    json: Any = None,
) -> httpx.Response:
    """Call the api as the signed-in person; raise UpstreamError/ApiUnavailable unless `ok`."""
    identity = current_identity()
    if identity is None:
        raise UpstreamError(401, "unauthorized", "Sign in first.")
    response = timed_send(
        method, path, signer=identity.signer, kind="page", params=params, json=json
    )
    if response.status_code not in ok:
        raise error_from(response)
    return response


def fetch(model: type[Reply], path: str, params: Mapping[str, str] | None = None) -> Reply:
    """GET an api document as the signed-in person, parsed into its `core.schemas` model."""
    return reply_as(model, call("GET", path, params=params))


def send_as(
    model: type[Reply],
    method: str,
    path: str,
    *,
    ok: tuple[int, ...] = (200,),
    json: Any = None,
) -> Reply:
    """`call`, then the reply parsed into its `core.schemas` model."""
    return reply_as(model, call(method, path, ok=ok, json=json))


def refusal_message(response: httpx.Response, default: str) -> str:
    """The message of an api refusal (its error body), or `default` when it has none."""
    return str(_error_body(response).get("message") or default)


def public_context(request_id: str) -> AccessRequestView | None:
    """The public context of an access request, or None when unknown or expired.

    Parsed into the api's own reply model, so pages read typed fields (times are unix
    seconds, as the api states them) and a malformed reply is the api failing (502).
    """
    if not REQUEST_ID_RE.fullmatch(request_id):
        return None  # no id of another shape was ever minted: the api would answer 404
    path = api_path("/api/v1/requests/{request_id}/context", request_id=request_id)
    response = timed_send("GET", path, signer=None, kind="page")
    if response.status_code in (404, 410):
        return None
    if response.status_code != 200:
        raise error_from(response)
    return reply_as(AccessRequestView, response)
