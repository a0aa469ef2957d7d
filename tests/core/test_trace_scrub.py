"""The last filter before a span leaves the process (envcat/core/trace_scrub.py)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from envcat.core.trace_scrub import ScrubbingExporter, scrub_attributes

TOKEN = "canary-poll-token-7f3a"


def test_urls_lose_their_query_strings() -> None:
    clean = scrub_attributes(
        {
            "http.url": f"https://envcat.test/approve/abc?token={TOKEN}#frag",
            "url.full": f"https://envcat.test/wait?poll={TOKEN}",
            "http.target": f"/api/v1/requests/abc/wait?timeout=20&t={TOKEN}",
            "url.query": f"t={TOKEN}",
            "url.path": "/api/v1/requests/abc/wait",
        }
    )
    assert clean == {
        "http.url": "https://envcat.test/approve/abc",
        "url.full": "https://envcat.test/wait",
        "http.target": "/api/v1/requests/abc/wait",
        "url.path": "/api/v1/requests/abc/wait",
    }


def test_only_harmless_captured_headers_stay() -> None:
    clean = scrub_attributes(
        {
            "http.request.header.x_poll_token": (TOKEN,),
            "http.request.header.authorization": (f"Bearer {TOKEN}",),
            "http.request.header.cookie": (f"envcat_session={TOKEN}",),
            "http.request.header.x_signature": (TOKEN,),
            "http.response.header.set_cookie": (TOKEN,),
            "http.request.header.user_agent": ("envcat-cli/1.0",),
            "http.response.header.content_type": ("application/json",),
        }
    )
    assert clean == {
        "http.request.header.user_agent": ("envcat-cli/1.0",),
        "http.response.header.content_type": ("application/json",),
    }


def test_redis_statements_keep_the_command_name_only() -> None:
    redis = scrub_attributes({"db.system": "redis", "db.statement": f"SET k {TOKEN}"})
    assert redis["db.statement"] == "SET"
    newer = scrub_attributes({"db.system.name": "redis", "db.query.text": f"EVALSHA x 1 {TOKEN}"})
    assert newer["db.query.text"] == "EVALSHA"
    sql = scrub_attributes(
        {"db.system": "sqlite", "db.statement": "SELECT * FROM keys WHERE id = ?"}
    )
    assert sql["db.statement"] == "SELECT * FROM keys WHERE id = ?"  # placeholders, no values


def test_exception_text_and_parameters_are_dropped() -> None:
    clean = scrub_attributes(
        {
            "exception.type": "ValueError",
            "exception.message": f"bad value {TOKEN}",
            "exception.stacktrace": f"Traceback ... {TOKEN}",
            "celery.retry.reason": f"Retry in 1s: {TOKEN}",
            "db.statement.parameters": f"('{TOKEN}',)",
            "db.query.parameter.0": TOKEN,
        }
    )
    assert clean == {"exception.type": "ValueError"}


def test_the_exporter_scrubs_attributes_events_and_status() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(memory)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("work", attributes={"url.query": TOKEN}) as span:
        span.record_exception(ValueError(f"leaked {TOKEN}"))
        span.set_status(Status(StatusCode.ERROR, f"failed with {TOKEN}"))
    provider.shutdown()
    (exported,) = memory.get_finished_spans()
    assert exported.status.status_code is StatusCode.ERROR
    assert TOKEN not in repr(dict(exported.attributes or {}))
    assert TOKEN not in repr([dict(e.attributes or {}) for e in exported.events])
    assert TOKEN not in str(exported.status.description)
    assert exported.events[0].attributes == {"exception.type": "ValueError"}
