"""Prometheus exposition shared by the api, the bff and the workers.

Under gunicorn or a prefork Celery pool set PROMETHEUS_MULTIPROC_DIR: the
registry then sums every process of the service (the gunicorn.conf.py files make
a private one when it is unset, envcat/core/serving.py). `/metrics` of the api
and the bff answers only a scraper that sends `Authorization: Bearer
<METRICS_TOKEN>`; without METRICS_TOKEN it does not exist (404).
"""

from __future__ import annotations

import hmac
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from pydantic import SecretStr


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


def is_authorized(token: SecretStr | None, authorization: str | None) -> bool | None:
    """None when METRICS_TOKEN is unset (serve 404); else whether the bearer token matches."""
    if token is None:
        return None
    scheme, _, supplied = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not supplied:
        return False
    expected = token.get_secret_value().encode("utf-8")
    return hmac.compare_digest(expected, supplied.strip().encode("utf-8", "replace"))
