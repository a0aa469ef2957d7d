"""What an exported span may say: the last filter before any span leaves the process.

Every exporter EnvCat builds is wrapped in `ScrubbingExporter`, so whatever an
instrumentation records (or an operator switches on with an `OTEL_INSTRUMENTATION_*`
variable), a span leaves with:

- no query string in any URL attribute (`http.url`, `http.target`, `url.full`;
  `url.query` is dropped): approval links and polls carry ids there, and a
  future token must not end up in a tracing backend;
- no captured header but a short allow-list (never `Authorization`, `Cookie`,
  `X-Poll-Token`, `X-Signature`, the client-address proof or Svix signatures);
- only the command name of a Redis statement (`EVALSHA`, `BLPOP`): arguments are
  ciphertexts, poll-token hashes and MACs;
- no SQL parameters (SQLAlchemy statements keep their `?` placeholders);
- no free text from exceptions or retries (`exception.message`,
  `exception.stacktrace`, `celery.retry.reason`, the status description): a
  driver's message may quote what it was given. `exception.type` stays.

Imported only when tracing is on (it needs the OpenTelemetry SDK).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from opentelemetry.util.types import AttributeValue

URL_KEYS = frozenset({"http.url", "http.target", "url.full"})
DROPPED_KEYS = frozenset(
    {
        "url.query",
        "db.statement.parameters",
        "exception.message",
        "exception.stacktrace",
        "exception.escaped",
        "celery.retry.reason",
    }
)
DROPPED_PREFIXES = ("db.query.parameter.", "db.operation.parameter.")
STATEMENT_KEYS = frozenset({"db.statement", "db.query.text"})
HEADER_PREFIXES = ("http.request.header.", "http.response.header.")
# Captured headers that may stay (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* can ask for any).
ALLOWED_HEADERS = frozenset(
    {"content-type", "content-length", "accept", "user-agent", "x-request-id", "retry-after"}
)


def _is_redis(attributes: Mapping[str, AttributeValue]) -> bool:
    return "redis" in (attributes.get("db.system"), attributes.get("db.system.name"))


def _keeps_header(key: str) -> bool:
    for prefix in HEADER_PREFIXES:
        if key.startswith(prefix):
            name = key.removeprefix(prefix).replace("_", "-").lower()
            return name in ALLOWED_HEADERS
    return True


def scrub_attributes(
    attributes: Mapping[str, AttributeValue] | None,
) -> dict[str, AttributeValue]:
    """Return a copy of `attributes` with everything that may hold a secret removed or cut."""
    source = dict(attributes or {})
    redis = _is_redis(source)
    clean: dict[str, AttributeValue] = {}
    for key, value in source.items():
        if key in DROPPED_KEYS or key.startswith(DROPPED_PREFIXES) or not _keeps_header(key):
            continue
        if key in URL_KEYS and isinstance(value, str):
            value = value.split("?", 1)[0].split("#", 1)[0]
        elif key in STATEMENT_KEYS and redis and isinstance(value, str):
            value = value.split(" ", 1)[0]  # the command name only
        clean[key] = value
    return clean


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of `span` whose attributes, events and status pass `scrub_attributes`."""
    events = [
        Event(event.name, scrub_attributes(event.attributes), event.timestamp)
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),  # the description is free text
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingExporter(SpanExporter):
    """Hand `inner` scrubbed copies of the spans (see the module docstring)."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Scrub, then export."""
        return self._inner.export([scrub_span(span) for span in spans])

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the wrapped exporter."""
        return self._inner.force_flush(timeout_millis)
