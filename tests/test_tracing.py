"""OpenTelemetry traces through the live stack (real bff, api and Celery worker in one process).

One in-memory exporter sees every component: one approval must be one trace from
the bff's page to the worker's task, and no span may carry a secret, even with
header capture switched on for every header.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from envcat.core import tracing
from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.bff import PASSWORD, Browser, sign_in, unique_email
from tests.support.envelopes import open_delivery
from tests.support.settings import make_settings
from tests.support.stack import LiveStack, live_stack
from tests.support.traces import collect_spans, spans_text

pytestmark = pytest.mark.slow

CANARIES = {
    "TRACE_DB_PASSWORD": f"canary-trace-db-{secrets.token_hex(8)}",
    "TRACE_API_TOKEN": f"canary-trace-api-{secrets.token_hex(8)}",
}
_BUNDLE_URL = re.compile(r"^/bundles/([0-9a-f-]{36})$")
APPROVE_TASK_RUN = "run/envcat.encrypt_from_bundle"
APPROVE_TASK_SEND = "apply_async/envcat.encrypt_from_bundle"


def _bundle_with_canaries(browser: Browser) -> str:
    created = browser.post("/bundles", {"name": "traced/api"})
    assert created.status_code == 302, created.text
    match = _BUNDLE_URL.match(created.headers["Location"])
    assert match is not None
    for name, value in CANARIES.items():
        added = browser.post(f"/bundles/{match.group(1)}/keys", {"name": name, "value": value})
        assert added.status_code == 302
    return match.group(1)


def _needles(extra: Sequence[str]) -> list[str]:
    found = []
    for value in [*CANARIES.values(), *extra]:
        found += [value, base64.b64encode(value.encode()).decode()[:-4]]
    return found


def _by_id(spans: Sequence[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in spans if span.context is not None}


def _ancestors(span: ReadableSpan, index: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """`span`'s parents up to the root of its trace, nearest first."""
    chain = []
    while span.parent is not None and span.parent.span_id in index:
        span = index[span.parent.span_id]
        chain.append(span)
    return chain


def _approve_through_the_bff(stack: LiveStack) -> tuple[str, str, dict[str, str]]:
    """Sign in, seed canaries, have a CLI ask and wait, approve; return (id, token, cookies)."""
    email = unique_email("tracer")
    browser = sign_in(stack, email, stack.sign_up(email, PASSWORD))
    bundle_id = _bundle_with_canaries(browser)
    private_key = generate_keypair()
    with stack.browser() as cli:
        created = cli.post(
            "/api/v1/requests",
            json={"client_pubkey": encode_public_key(private_key), "workspace": browser.workspace},
        )
        assert created.status_code == 201, created.text
        request_id, poll_token = created.json()["id"], created.json()["poll_token"]
        approved = browser.post(
            f"/approve/{request_id}", {"bundle_id": bundle_id, "include_keys": list(CANARIES)}
        )
        assert approved.status_code == 200, approved.text
        waited = cli.get(
            f"/api/v1/requests/{request_id}/wait",
            params={"timeout": 20},
            headers={"X-Poll-Token": poll_token},
        )
    assert waited.status_code == 200, waited.text
    assert open_delivery(private_key, waited.json()["ciphertext_base64"]) == CANARIES
    return request_id, poll_token, dict(browser.client.cookies)


def test_one_approval_is_one_trace_from_bff_to_worker_and_no_span_holds_a_secret(
    sqlite_url: str, redis_url: str, broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator who captures every header must still not export tokens or cookies.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ".*")
    settings = make_settings(sqlite_url, redis_url, broker_url)
    with (
        collect_spans(settings) as exporter,
        live_stack(sqlite_url, redis_url, broker_url) as stack,
    ):
        request_id, poll_token, cookies = _approve_through_the_bff(stack)
    spans = exporter.get_finished_spans()
    index = _by_id(spans)

    run = next(s for s in spans if s.name == APPROVE_TASK_RUN)
    chain = _ancestors(run, index)
    kinds_and_names = [(s.kind, s.name) for s in chain]
    # worker ← Celery publish ← api view ← the bff's call ← the bff's page: one trace
    assert kinds_and_names[0] == (SpanKind.PRODUCER, APPROVE_TASK_SEND)
    assert kinds_and_names[1] == (
        SpanKind.SERVER,
        "POST /api/v1/requests/<request_id>/encrypt-from-bundle",
    )
    assert kinds_and_names[2] == (SpanKind.CLIENT, "POST")
    assert chain[2].instrumentation_scope is not None
    assert chain[2].instrumentation_scope.name == "envcat.http"
    assert kinds_and_names[3] == (SpanKind.SERVER, "POST /approve/<request_id>")
    assert chain[3].parent is None  # the bff's page started it
    trace_id = run.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    names = {s.name for s in in_trace}
    assert any(n.startswith("EVALSHA") or n.startswith("EVAL") for n in names), names  # Redis
    assert any(s.attributes and s.attributes.get("db.system") == "sqlite" for s in in_trace)
    # The worker's own Redis and database work hangs under its task span.
    assert any(run in _ancestors(s, index) for s in in_trace if s is not run)

    # Header capture was on, and did capture: the scrubber kept only harmless ones.
    text = spans_text(spans)
    assert "http.request.header.user_agent" in text
    assert "x_poll_token" not in text and "cookie" not in text.lower()
    assert request_id in text  # the scan reads real span content
    needles = _needles([poll_token, *cookies.values()])
    leaked = [n for n in needles if n in text]
    assert not leaked, "a secret reached an exported span"
    # Redis statements are command names only: no arguments at all.
    for span in spans:
        statement = (span.attributes or {}).get("db.statement")
        if (span.attributes or {}).get("db.system") == "redis":
            assert statement is None or " " not in str(statement), statement
        assert "?" not in str((span.attributes or {}).get("http.target", ""))


def test_the_bff_does_not_continue_a_trace_sent_from_the_internet(
    sqlite_url: str, redis_url: str, broker_url: str
) -> None:
    forged_trace = secrets.token_hex(16)
    traceparent = f"00-{forged_trace}-{secrets.token_hex(8)}-01"
    settings = make_settings(sqlite_url, redis_url, broker_url)
    with (
        collect_spans(settings) as exporter,
        live_stack(sqlite_url, redis_url, broker_url) as stack,
        stack.browser() as cli,
    ):
        created = cli.post(
            "/api/v1/requests",
            json={"client_pubkey": encode_public_key(generate_keypair()), "workspace": "x"},
            headers={"traceparent": traceparent, "baggage": "tenant=t-victim"},
        )
        assert created.status_code in (201, 404), created.text
    spans = exporter.get_finished_spans()
    served = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(served) == 2, [s.name for s in served]  # the bff's proxy and the api's view
    assert all(f"{s.context.trace_id:032x}" != forged_trace for s in spans)
    bff_span = next(s for s in served if s.parent is None)
    api_span = next(s for s in served if s.parent is not None)
    assert api_span.context.trace_id == bff_span.context.trace_id  # the bff's own trace
    assert "t-victim" not in spans_text(spans)


def test_tracing_is_off_unless_an_exporter_is_named(
    sqlite_url: str, redis_url: str, broker_url: str, tmp_path: Path
) -> None:
    settings = make_settings(sqlite_url, redis_url, broker_url)
    assert settings.otel_traces_exporter == "none"
    assert tracing.setup(settings, "api") is False
    assert not tracing.is_active()
    disabled = settings.model_copy(
        update={"otel_traces_exporter": "otlp", "otel_sdk_disabled": True}
    )
    assert tracing.setup(disabled, "api") is False
    with live_stack(sqlite_url, redis_url, broker_url) as stack:
        assert not getattr(stack.api_app, "_is_instrumented_by_opentelemetry", False)
        assert not getattr(stack.bff_app, "_is_instrumented_by_opentelemetry", False)
        reply = httpx.get(f"{stack.bff_url}/healthz", timeout=10)
        assert reply.status_code == 200
