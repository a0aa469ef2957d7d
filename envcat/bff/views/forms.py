"""Helpers shared by the form-handling pages: submit, report the outcome, redirect back."""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, render_template, request

from envcat.bff import backend
from envcat.bff.backend import UpstreamError

MASK = "••••••••"


def page(template: str, status: int = 200, **values: Any) -> Response:
    """Render a template as an HTML response."""
    return Response(render_template(template, **values), status=status, mimetype="text/html")


PAGE_SIZE = 50  # rows per page of the bundle and key lists (issue #15)


def page_params(query: str) -> dict[str, str]:
    """The api parameters of one page of a list: the search, the size, this page's cursor."""
    params = {"limit": str(PAGE_SIZE)}
    if query:
        params["q"] = query
    if cursor := request.args.get("cursor", ""):
        params["cursor"] = cursor
    return params


def checkbox(name: str) -> bool:
    """True when a checkbox was ticked."""
    return request.form.get(name) in ("on", "true", "1", "yes")


def phrase_field() -> dict[str, str]:
    """The phrase the approver typed, where the workspace requires it (the api compares)."""
    typed = request.form.get("phrase")
    return {} if typed is None else {"phrase": typed}


def tags_field(name: str = "tags") -> list[str]:
    """Comma-separated tags, trimmed, without empties or duplicates."""
    raw = request.form.get(name, "")
    return list(dict.fromkeys(tag.strip() for tag in raw.split(",") if tag.strip()))


def describe(exc: UpstreamError) -> str:
    """A readable sentence for a refused change, with the api's field errors."""
    if exc.status == 403:
        return f"Your role does not allow this. {exc.message}"
    parts = [exc.message]
    if isinstance(exc.details, list):
        for item in exc.details:
            if isinstance(item, dict) and item.get("msg"):
                location = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{location}: {item['msg']}" if location else str(item["msg"]))
    return " ".join(parts)


# Field errors whose api wording means nothing to a person, in plain words.
_PLAIN_WORDS = {
    ("include_keys", "too_short"): "Choose at least one key.",
}


def refusal(exc: UpstreamError) -> str:
    """The sentence to show for a refused approval: plain words when we have them."""
    for item in exc.details if isinstance(exc.details, list) else []:
        if isinstance(item, dict):
            field = str((item.get("loc") or [""])[0])
            if plain := _PLAIN_WORDS.get((field, str(item.get("type")))):
                return plain
    return exc.message


def submit(
    method: str,
    path: str,
    *,
    back: str,
    done: str,
    json: Any = None,
    ok: tuple[int, ...] = (200, 201, 204),
) -> Response:
    """Make one change through the api, flash the outcome and go back (post/redirect/get).

    401 and 404 propagate to the error handlers (sign in again / not found page).
    """
    try:
        backend.call(method, path, json=json, ok=ok)
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect(back)  # type: ignore[return-value]
    flash(done, "success")
    return redirect(back)  # type: ignore[return-value]
