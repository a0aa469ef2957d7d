"""Schemathesis against /api/v1/openapi.json: every operation, public ones plain,
signed ones HMAC-signed for a seeded owner (internal ones for the bff identity).

Signing happens in a WSGI layer in front of the api, after the test client has
serialised the call, over the exact method, path, query and body bytes the api
receives, as the bff's `HmacAuth` does. Path parameters are drawn from random
text and from the ids of seeded objects, so the fuzzer reaches real rows.
Checks: no 5xx, every 4xx/5xx in the JSON error shape, responses conform to
their schemas and statuses to the document.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings as examples
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance
from werkzeug.wrappers import Request

from envcat.core import signing
from envcat.core.schemas.connectors import ConnectionCreate, LinkCreate
from envcat.core.settings import Settings
from envcat.models import AuditSink, Group, ServiceToken, WorkloadPolicy, db, utcnow
from envcat.services.connectors import connections, links
from envcat.services.runtime import current
from envcat.services.tenancy import Actor
from tests.support.api import SeedKey, key_row, seed_bundle
from tests.support.requests import stored_request
from tests.support.settings import make_settings
from tests.support.signed import add_member

OWNER, TENANT = "u-fuzz-owner", "t-fuzz"
SIGN_AS_HEADER = "X-Fuzz-Sign-As"
SIGN_AS_ENVIRON = "HTTP_X_FUZZ_SIGN_AS"
MAX_EXAMPLES = 25
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SigningLayer:
    """WSGI middleware: sign the call exactly as it reaches the api, for the marked identity."""

    def __init__(self, app: WsgiApp, secret: str) -> None:
        self.app = app
        self.secret = secret
        self.signed_calls = 0
        self.signed_and_accepted = 0  # signed calls answered past authentication

    def _count(self, start_response: StartResponse) -> StartResponse:
        def counting(status: str, *args: Any) -> Any:
            # 401 is the signature check; 404 and 405 may come from routing, before it
            if status[:3] not in ("401", "404", "405"):
                self.signed_and_accepted += 1
            return start_response(status, *args)

        return counting

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        identity = environ.pop(SIGN_AS_ENVIRON, None)
        # Only a call that carries the generated X-Signature is signed: a negative case
        # that leaves the header out must reach the api unsigned (and get its 401).
        if identity is not None and "HTTP_X_SIGNATURE" in environ:
            request = Request(environ)
            body = request.get_data(cache=False)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            user_id, tenant_id = identity.split("|", 1)
            headers = signing.sign_headers(
                self.secret,
                user_id,
                tenant_id,
                request.method,
                request.path,
                request.query_string.decode("latin-1"),
                body,
            )
            for name, value in headers.items():
                environ["HTTP_" + name.upper().replace("-", "_")] = value
            self.signed_calls += 1
            start_response = self._count(start_response)
        return self.app(environ, start_response)


def _seed() -> dict[str, list[str]]:
    """Rows and pending requests whose ids the fuzzer may pick as path parameters."""
    add_member(OWNER, TENANT)
    names = ["DATABASE_URL", "TOKEN"]
    bundle_id = seed_bundle(
        TENANT, "production/api", [SeedKey(names[0], "db"), SeedKey(names[1], "t", True)]
    )
    # A sink to read and delete (its host is never reached: nothing ships in this test).
    db.session.add(AuditSink(tenant_id=TENANT, host="logs.example.com", port=6514, tls=True))
    db.session.commit()
    runtime = current()
    request_ids = [
        stored_request(runtime.redis, tenant_id=TENANT, ttl=runtime.settings.request_ttl)[0].id
        for _ in range(3)
    ]
    policy = WorkloadPolicy(
        tenant_id=TENANT,
        name="ci",
        issuer="https://token.actions.githubusercontent.com",
        audience="https://envcat.test",
        rules=[{"claim": "repository", "op": "eq", "value": "acme/api"}],
        bundle_id=bundle_id,
        keys=[],
        mode="automatic",
    )
    token = ServiceToken(
        tenant_id=TENANT,
        name="ci",
        prefix="0123456789ab",
        token_hash="0" * 64,
        bundle_id=bundle_id,
        keys=[],
        created_by=OWNER,
        expires_at=utcnow() + timedelta(days=1),
    )
    group = Group(tenant_id=TENANT, name="sre")  # issue #17
    db.session.add_all([policy, token, group])
    db.session.commit()
    connection_id, link_id = _seed_connector(bundle_id)
    return {
        "bundle_id": [bundle_id],
        "key_id": [key_row(TENANT, name).id for name in names],
        "request_id": request_ids,
        "policy_id": [policy.id],  # issue #16
        "token_id": [token.id],
        "connection_id": [connection_id],
        "link_id": [link_id],
        "group_id": [group.id],
    }


def _seed_connector(bundle_id: str) -> tuple[str, str]:
    """A connection (to a port nothing answers on) and a link of the seeded bundle."""
    actor = Actor(tenant_id=TENANT, user_id=OWNER)
    connection = connections.create(
        actor,
        ConnectionCreate.model_validate(
            {
                "name": "fuzz",
                "provider": "aws",
                "region": "eu-west-1",
                "endpoint_url": "http://127.0.0.1:1",
                "aws": {"access_key_id": "AKIAFUZZFUZZFUZZFUZZ", "secret_access_key": "x" * 40},
            }
        ),
    )
    link = links.create(
        actor,
        LinkCreate(connection_id=connection.id, bundle_id=bundle_id, direction="pull"),
    )
    return connection.id, link.id


# The seeded ids of the running test, read by the strategies when they draw.
KNOWN: dict[str, list[str]] = {}
KNOWN_NAMES = (
    "bundle_id",
    "key_id",
    "request_id",
    "policy_id",
    "token_id",
    "connection_id",
    "link_id",
    "group_id",
)


def _document_app() -> Flask:
    """An api built only to serve its OpenAPI document (it never reaches Redis or a DB)."""
    from envcat.api import create_app

    unused = "redis://127.0.0.1:1"
    return create_app(make_settings("sqlite://", f"{unused}/0", f"{unused}/1"))


schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", _document_app())


def _known(name: str) -> st.SearchStrategy[str]:
    return st.integers(0, 99).map(lambda i: KNOWN[name][i % len(KNOWN[name])])


@schema.hook
def before_generate_path_parameters(context: Any, strategy: Any) -> Any:
    """Half random text, half ids of seeded rows and requests."""
    names = [p.name for p in context.operation.path_parameters]
    if not names or any(name not in KNOWN_NAMES for name in names):
        return strategy
    return strategy | st.fixed_dictionaries({name: _known(name) for name in names})


@schema.hook
def filter_case(context: Any, case: Case[Any]) -> bool:
    """Send no empty query values: `?action=` means "not given" by design (`_Query`)."""
    return not case.query or all(value != "" for value in case.query.values())


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, broker_url: str) -> Settings:
    """The shared test settings plus a webhook secret, so the webhook route verifies."""
    return make_settings(sqlite_url, redis_url, broker_url, clerk_webhook_secret=WEBHOOK_SECRET)


@pytest.fixture
def fuzz_app(api_app: Flask, settings: Settings) -> Iterator[Flask]:
    """The real api with seeded rows, behind the signing layer; serves the same document."""
    KNOWN.clear()
    KNOWN.update(_seed())
    layer = SigningLayer(api_app.wsgi_app, settings.bff_shared_secret.get_secret_value())
    api_app.wsgi_app = layer  # type: ignore[method-assign]  # middleware, as Flask documents it
    assert api_app.test_client().get("/api/v1/openapi.json").get_json() == schema.raw_schema
    yield api_app
    # A signing layer that never got a call past authentication would make this test vacuous.
    if layer.signed_calls:
        assert layer.signed_and_accepted > 0, "every signed call was refused: signing is broken"


def error_shape(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx/5xx body is {"error": str, "message": str, "details"?: any}, nothing more."""
    if response.status_code < 400:
        return None
    body = json.loads(response.content)
    assert isinstance(body, dict), f"error body is not an object: {response.content[:200]!r}"
    assert set(body) <= {"error", "message", "details"}, f"extra fields: {sorted(body)}"
    assert isinstance(body.get("error"), str) and body["error"], "missing error code"
    assert isinstance(body.get("message"), str), "missing message"
    assert "Traceback" not in response.text
    return True


def _identity(case: Case[Any]) -> str | None:
    """Who a call is signed for: the bff on internal routes, the owner on the others."""
    security = case.operation.definition.raw.get("security") or []
    if not any("bffSignature" in entry for entry in security):
        return None
    if case.path.startswith("/api/v1/internal/"):
        return f"{signing.BFF_USER_ID}|{signing.NO_TENANT}"
    return f"{OWNER}|{TENANT}"


# ignored_auth replays a call without its auth and expects a 401: the signing layer
# signs whatever is marked, so that is tested directly (tests/api/test_hmac.py) instead.
# positive_data_acceptance expects every schema-valid value to be accepted, but the
# document does not carry every validator (key-name patterns, canonical base64 of the
# public key, cursors handed out by the api), so a schema-valid value may rightly be a 400.
EXCLUDED_CHECKS = [ignored_auth, positive_data_acceptance]


@schema.parametrize()
@examples(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_survives_fuzzing(case: Case[Any], fuzz_app: Flask) -> None:
    headers = {}
    if (identity := _identity(case)) is not None:
        headers[SIGN_AS_HEADER] = identity
    case.call_and_validate(
        app=fuzz_app,
        headers=headers,
        additional_checks=[error_shape],
        excluded_checks=EXCLUDED_CHECKS,
    )
