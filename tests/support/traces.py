"""Tracing on for one test: the real SDK, spans kept by its in-memory exporter.

    with collect_spans(settings) as exporter:
        ...                                   # build apps and run the flow here
    spans = exporter.get_finished_spans()

Start it before any app is built (SQLAlchemy engines are traced from creation on);
leaving the block turns tracing off and undoes the instrumentation.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from envcat.core import tracing
from envcat.core.settings import Settings


@contextlib.contextmanager
def collect_spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    """Trace every component this process runs (api, bff and worker alike) into memory."""
    exporter = InMemorySpanExporter()
    assert tracing.setup(settings, "api", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def spans_text(spans: Iterable[ReadableSpan]) -> str:
    """Everything each exported span says, as one text to search: names, attributes, events."""
    parts = []
    for span in spans:
        parts.append(
            json.dumps(
                {
                    "name": span.name,
                    "attributes": dict(span.attributes or {}),
                    "events": [[e.name, dict(e.attributes or {})] for e in span.events],
                    "status": span.status.description,
                    "resource": dict(span.resource.attributes),
                    "links": [dict(link.attributes or {}) for link in span.links],
                },
                default=str,
                ensure_ascii=False,
            )
        )
    return "\n".join(parts)
