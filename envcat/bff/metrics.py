"""Prometheus metrics of the bff, prefixed `envcat_bff_` (DESIGN §10).

Exposed through envcat.core.exposition.
"""

from __future__ import annotations

from prometheus_client import (
    Counter,
    Histogram,
)

HTTP_REQUESTS = Counter(
    "envcat_bff_http_requests_total", "Requests answered by the bff", ["endpoint", "status"]
)
API_CALL_SECONDS = Histogram(
    "envcat_bff_api_call_seconds",
    "Time of one bff → api call, long polls included",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 45),
)
API_UNAVAILABLE = Counter(
    "envcat_bff_api_unavailable_total", "Calls that found the api unreachable or failing"
)
SIGN_INS = Counter("envcat_bff_sign_ins_total", "Sign-in attempts", ["outcome"])
PROXY_REJECTED = Counter(
    "envcat_bff_proxy_rejected_total", "Proxied calls refused by the bff itself", ["reason"]
)
