"""Prometheus exposition shared by the api, the bff and the workers.

Under gunicorn or a prefork Celery pool set PROMETHEUS_MULTIPROC_DIR: the
registry then sums every process of the service.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)


def registry() -> CollectorRegistry:
    """The default registry, or one that sums every process in multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


def render() -> tuple[bytes, str]:
    """Return the exposition body and content type for a /metrics endpoint."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST
