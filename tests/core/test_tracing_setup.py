"""envcat.core.tracing as the servers start it: from the settings, once per process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from envcat.core import tracing
from envcat.core.settings import Settings
from envcat.core.trace_scrub import ScrubbingExporter
from envcat.ops.config import settings_environment


@pytest.fixture
def traced_settings(settings: Settings) -> Iterator[Settings]:
    yield settings.model_copy(
        update={"otel_traces_exporter": "otlp", "otel_service_name": "envcat-test-api"}
    )
    tracing.shutdown()


def test_otlp_from_the_settings_exports_in_batches_through_the_scrubber(
    traced_settings: Settings,
) -> None:
    assert tracing.setup(traced_settings, "api") is True
    assert tracing.setup(traced_settings, "api") is True  # idempotent: the first call wins
    state = tracing._active
    assert state is not None
    assert state.provider.resource.attributes["service.name"] == "envcat-test-api"
    processors = state.provider._active_span_processor._span_processors
    assert len(processors) == 1
    processor = processors[0]
    assert isinstance(processor, BatchSpanProcessor)
    exporter = processor._batch_processor._exporter
    assert isinstance(exporter, ScrubbingExporter)
    assert isinstance(exporter._inner, OTLPSpanExporter)
    tracing.shutdown()
    assert not tracing.is_active()


def test_the_worker_module_starts_tracing_before_it_builds_its_app(settings: Settings) -> None:
    env = {
        **settings_environment(settings),
        "OTEL_TRACES_EXPORTER": "console",
        "PATH": "/usr/bin:/bin",
    }
    probe = (
        "import envcat.workers.celery as worker; from envcat.core import tracing; "
        "assert tracing.is_active(); "
        "assert tracing._active.provider.resource.attributes['service.name'] == 'envcat-worker'; "
        "print('traced')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("traced")
