"""Declare endpoints once: the same pydantic models validate requests and build the
OpenAPI 3.1 document at /api/v1/openapi.json (no hand-written copy that can drift)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import envcat
from envcat.core.wire import POLL_TOKEN_HEADER
from envcat.services.errors import ValidationFailed

Auth = Literal["public", "signed", "internal", "svix", "poll"]
ResponseSpec = type[BaseModel] | None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str
    message: str
    details: Any | None = None


@dataclass(frozen=True)
class Operation:
    """One documented endpoint."""

    method: str
    path: str
    summary: str
    auth: Auth
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    responses: dict[int, ResponseSpec] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    body_optional: bool = False


OPERATIONS: list[Operation] = []
_RULE_PARAM = re.compile(r"<(?:[a-z]+:)?([A-Za-z_]+)>")


def _parse_body(model: type[BaseModel], optional: bool = False) -> BaseModel:
    if optional and not request.get_data(cache=True):
        return model()  # an optional body left out: its defaults
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # absurdly deep nesting: json gives up before `silent` applies
        data = None
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    return model.model_validate(data)


def _reply(result: Any) -> Any:
    if isinstance(result, tuple) and result and isinstance(result[0], BaseModel):
        return (jsonify(result[0].model_dump(mode="json")), *result[1:])
    if isinstance(result, BaseModel):
        return jsonify(result.model_dump(mode="json"))
    return result


def endpoint(
    bp: Blueprint,
    rule: str,
    method: str,
    *,
    summary: str,
    auth: Auth,
    responses: dict[int, ResponseSpec],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    body_optional: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Route `rule` on `bp`, parse `body=`/`query=` models into kwargs, and document it.

    With `body_optional`, a call without a body gets the model's defaults (a body that
    was added to an endpoint its clients called without one).
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Response:
            if body is not None:
                kwargs["body"] = _parse_body(body, body_optional)
            if query is not None:
                kwargs["query"] = query.model_validate(request.args.to_dict())
            result: Response = _reply(view(**kwargs))
            return result

        bp.add_url_rule(rule, endpoint=view.__name__, view_func=wrapper, methods=[method])
        path = _RULE_PARAM.sub(r"{\1}", (bp.url_prefix or "") + rule)
        OPERATIONS.append(
            Operation(
                method.lower(),
                path,
                summary,
                auth,
                bp.name,
                body,
                query,
                responses,
                errors,
                body_optional,
            )
        )
        return wrapper

    return decorate


SECURITY_SCHEMES = {
    "bffSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": "HMAC-SHA256 of the canonical call (DESIGN §5) with X-User-Id, "
        "X-Tenant-Id, X-Timestamp and X-Nonce.",
    },
    "pollToken": {"type": "apiKey", "in": "header", "name": POLL_TOKEN_HEADER},
    "svix": {"type": "apiKey", "in": "header", "name": "svix-signature"},
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "signed": [{"bffSignature": []}],
    "internal": [{"bffSignature": []}],
    "svix": [{"svix": []}],
    "public": [],
    "poll": [{"pollToken": []}],
}
# Statuses the authentication itself answers, on every operation of that kind:
# a missing or bad signature/token is 401; a signed caller outside the tenant is 404.
_AUTH_ERRORS: dict[str, tuple[int, ...]] = {
    "signed": (401, 404),
    "internal": (401,),
    "svix": (401,),
    "public": (),
    "poll": (401,),
}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _operation_doc(
    op: Operation, ref: Callable[[type[BaseModel]], dict[str, str]]
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method}_{op.path}".replace("/", "_").replace("{", "").replace("}", ""),
        "security": _SECURITY[op.auth],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{([A-Za-z_]+)}", op.path)
        ],
        "responses": {},
    }
    if op.query is not None:
        doc["parameters"] += _query_parameters(op.query)
    if op.body is not None:
        doc["requestBody"] = {
            "required": not op.body_optional,
            "content": {"application/json": {"schema": ref(op.body)}},
        }
    for status, model in op.responses.items():
        entry: dict[str, Any] = {"description": "OK" if status < 300 else "Result"}
        if model is not None:
            entry["content"] = {"application/json": {"schema": ref(model)}}
        doc["responses"][str(status)] = entry
    for status in (*op.errors, *_AUTH_ERRORS[op.auth], 400, 503):
        doc["responses"].setdefault(
            str(status),
            {
                "description": "Error",
                "content": {"application/json": {"schema": ref(ErrorBody)}},
            },
        )
    return doc


def build_spec() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every declared endpoint."""
    models: set[type[BaseModel]] = {ErrorBody}
    for op in OPERATIONS:
        models.update(m for m in (op.body, *op.responses.values()) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema(
        [
            (m, "validation" if m in {op.body for op in OPERATIONS} else "serialization")
            for m in ordered
        ],
        ref_template="#/components/schemas/{model}",
    )

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation_doc(op, ref)
    return {
        "openapi": "3.1.0",
        "info": {"title": "EnvCat API", "version": envcat.__version__},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }
