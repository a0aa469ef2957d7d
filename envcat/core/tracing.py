"""OpenTelemetry traces of the server processes (docs/observability.md), off by default.

`setup(settings, component)` runs once per process: at the start of the api's and
the bff's `create_app` and in the worker's module (`envcat/workers/celery.py`). When
OTEL_TRACES_EXPORTER names an exporter it builds a tracer provider for
`envcat-<component>` (or OTEL_SERVICE_NAME), sets W3C trace context as the only
propagator (no baggage) and instruments Celery, Redis, SQLAlchemy and httpx;
`instrument_app` then instruments one Flask app. With tracing off nothing of
OpenTelemetry is imported, so the `otel` extra stays optional.

The trace context crosses bff → api in a `traceparent` header outside the HMAC
signature (DESIGN §5) and api → worker in the Celery message headers. The public
bff does not continue a trace it is handed from the internet: it drops incoming
trace headers before its own instrumentation reads them.

Every exporter is wrapped in `trace_scrub.ScrubbingExporter`: no span leaves with
a query string, a captured credential header, Redis arguments or exception text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from envcat.core.settings import ConfigError, Settings

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

Component = Literal["api", "bff", "worker"]
# WSGI names of the headers that carry a trace context (W3C trace context and baggage).
INCOMING_TRACE_KEYS = ("HTTP_TRACEPARENT", "HTTP_TRACESTATE", "HTTP_BAGGAGE")
# Probes and scrapes make no useful traces.
EXCLUDED_URLS = "healthz,readyz,metrics"
_INSTRUMENTED: dict[Component, tuple[str, ...]] = {
    "api": ("celery", "redis", "sqlalchemy", "httpx"),
    "bff": ("redis", "httpx"),
    "worker": ("celery", "redis", "sqlalchemy", "httpx"),
}


@dataclass
class _Tracing:
    provider: TracerProvider
    instrumentors: list[Any] = field(default_factory=list)


_active: _Tracing | None = None


def is_configured(settings: Settings) -> bool:
    """True when the settings ask for traces (OTEL_TRACES_EXPORTER set, OTEL_SDK_DISABLED not)."""
    return not settings.otel_sdk_disabled and settings.otel_traces_exporter != "none"


def is_active() -> bool:
    """True once `setup` has started tracing in this process."""
    return _active is not None


def setup(
    settings: Settings, component: Component, *, exporter: SpanExporter | None = None
) -> bool:
    """Start tracing for this process when configured (or `exporter` is given); True when on.

    Idempotent: the first call wins. `exporter` (tests) replaces the configured one
    and exports each span as it ends instead of in batches.
    """
    global _active
    if _active is not None:
        return True
    if exporter is None and not is_configured(settings):
        return False
    try:
        from opentelemetry import propagate
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from envcat.core.trace_scrub import ScrubbingExporter
    except ImportError:
        raise ConfigError(
            "envcat: configuration error: OTEL_TRACES_EXPORTER: needs the otel extra "
            "(pip install 'envcat[otel]')"
        ) from None
    name = settings.otel_service_name or f"envcat-{component}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(exporter)))
    else:
        inner = _configured_exporter(settings.otel_traces_exporter)
        provider.add_span_processor(BatchSpanProcessor(ScrubbingExporter(inner)))
    # Trace context only: baggage is free-form data nobody here reads.
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    state = _Tracing(provider)
    for library in _INSTRUMENTED[component]:
        instrumentor = _instrumentor(library)
        # The SQLAlchemy instrumentation declares < 2.1 but hooks 2.1's engines unchanged:
        # tests/test_tracing.py checks that database spans arrive.
        instrumentor.instrument(tracer_provider=provider, skip_dep_check=library == "sqlalchemy")
        state.instrumentors.append(instrumentor)
    _active = state
    return True


def _configured_exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # OTLP over HTTP; the SDK reads OTEL_EXPORTER_OTLP_* (endpoint, headers, certificate).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _instrumentor(library: str) -> Any:
    if library == "celery":
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        return CeleryInstrumentor()  # type: ignore[no-untyped-call]  # ships no hints
    if library == "redis":
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        return RedisInstrumentor()
    if library == "sqlalchemy":
        # Engines made after this call are traced: setup runs before the app's.
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        return SQLAlchemyInstrumentor()
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    return HTTPXClientInstrumentor()


def shutdown() -> None:
    """Flush pending spans, undo the instrumentation and turn tracing off (tests, exit)."""
    global _active
    state, _active = _active, None
    if state is None:
        return
    for instrumentor in reversed(state.instrumentors):
        instrumentor.uninstrument()
    state.provider.shutdown()


def instrument_app(app: Flask, *, public: bool = False) -> None:
    """Trace `app`'s requests (no-op when tracing is off).

    A `public` app (the bff) starts a fresh trace for every request: trace
    headers from the internet are dropped before the instrumentation reads them,
    so a client can neither choose trace ids nor force sampling.
    """
    if _active is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor.instrument_app(  # type: ignore[no-untyped-call]  # ships no hints
        app,
        tracer_provider=_active.provider,
        excluded_urls=EXCLUDED_URLS,
        enable_commenter=False,
    )
    if public:
        app.wsgi_app = _IgnoreIncomingTrace(app.wsgi_app)  # type: ignore[method-assign]


class _IgnoreIncomingTrace:
    """WSGI middleware that removes incoming trace-context headers."""

    def __init__(self, wsgi_app: Callable[..., Any]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: MutableMapping[str, Any], start_response: Any) -> Any:
        for key in INCOMING_TRACE_KEYS:
            environ.pop(key, None)
        return self.wsgi_app(environ, start_response)


class ClientCall:
    """One outgoing HTTP call's span; `finish(status)` records the reply's status code."""

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def finish(self, status: int) -> None:
        """Record the status code (an error status for 5xx)."""
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))


@contextlib.contextmanager
def client_call(method: str, path: str, headers: MutableMapping[str, str]) -> Iterator[ClientCall]:
    """Around a call made without httpx: a CLIENT span, its context injected into `headers`.

    `path` must not hold a query string. No-op when tracing is off.
    """
    if _active is None:
        yield ClientCall(None)
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    tracer = _active.provider.get_tracer("envcat.http")
    attributes = {"http.request.method": method, "url.path": path}
    with tracer.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes) as span:
        propagate.inject(headers)
        yield ClientCall(span)
