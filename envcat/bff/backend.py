"""Calls from the bff's pages to the api, signed for the signed-in person."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from envcat.bff import metrics
from envcat.bff.apiclient import ApiUnavailable, Signer
from envcat.bff.identity import caller_info, current_identity
from envcat.bff.runtime import runtime


class UpstreamError(Exception):
    """The api refused a page's call (4xx); the message is the api's, safe to show."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def timed_send(
    method: str,
    path: str,
    *,
    signer: Signer | None,
    kind: str,
    params: Mapping[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One api call with the caller's IP, user agent and request id, timed for /metrics."""
    started = time.perf_counter()
    try:
        response = runtime().api.send(
            method,
            path,
            signer=signer,
            caller=caller_info(),
            params=params,
            json=json,
            content=content,
            headers=headers,
        )
    except ApiUnavailable:
        metrics.API_UNAVAILABLE.inc()
        raise
    finally:
        metrics.API_CALL_SECONDS.labels(kind).observe(time.perf_counter() - started)
    return response


def error_from(response: httpx.Response) -> UpstreamError | ApiUnavailable:
    """Turn an unexpected api reply into the exception a page handles."""
    if response.status_code >= 500:
        metrics.API_UNAVAILABLE.inc()
        return ApiUnavailable(503, "The api is unavailable; retry in a moment.")
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
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


def fetch(path: str, params: Mapping[str, str] | None = None) -> Any:
    """GET a JSON document as the signed-in person."""
    return call("GET", path, params=params).json()


def public_context(request_id: str) -> dict[str, Any] | None:
    """The public context of an access request, or None when unknown or expired."""
    response = timed_send("GET", f"/api/v1/requests/{request_id}/context", signer=None, kind="page")
    if response.status_code in (404, 410):
        return None
    if response.status_code != 200:
        raise error_from(response)
    data: dict[str, Any] = response.json()
    return data
