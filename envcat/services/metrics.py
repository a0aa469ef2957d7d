"""Prometheus metrics shared by the api and the workers (DESIGN §10), prefixed `envcat_`.

Exposed through envcat.core.exposition.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS_CREATED = Counter("envcat_requests_created_total", "Access requests created")
REQUESTS_APPROVED = Counter("envcat_requests_approved_total", "Approvals accepted and enqueued")
REQUESTS_DENIED = Counter("envcat_requests_denied_total", "Requests denied by an approver")
REQUESTS_DELIVERED = Counter("envcat_requests_delivered_total", "Sealed payloads handed to a CLI")
REQUESTS_EXPIRED = Counter(
    "envcat_requests_expired_total", "Requests that expired", ["stage"]
)  # stage: pending (never approved) | unclaimed (approved, never collected)
REQUESTS_FAILED = Counter("envcat_requests_failed_total", "Approvals that could not be carried out")
REQUESTS_CANCELLED = Counter("envcat_requests_cancelled_total", "Requests cancelled by their CLI")
APPROVAL_TO_DELIVERY = Histogram(
    "envcat_approval_to_delivery_seconds",
    "From the approve call to the CLI receiving the sealed payload",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TASK_DURATION = Histogram(
    "envcat_task_duration_seconds",
    "Celery task run time",
    ["task"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
TASK_FAILURES = Counter("envcat_task_failures_total", "Celery task failures", ["task"])
QUEUE_DEPTH = Gauge(
    "envcat_queue_depth",
    "Messages waiting in a Celery queue",
    ["queue"],
    multiprocess_mode="livemax",
)
PENDING_REQUESTS = Gauge(
    "envcat_pending_requests", "Requests waiting for a decision", multiprocess_mode="livemax"
)
WEBHOOKS_RECEIVED = Counter(
    "envcat_webhooks_received_total", "Clerk webhooks received", ["outcome"]
)
BUSY_REFUSALS = Counter(
    "envcat_busy_refusals_total",
    "Creates and approvals refused because the approvals backlog was at its limit",
    ["stage"],
)  # stage: create | approve
# Set by the envcat.verify_audit_chains beat task (issue #21): "mostrecent" so the last run
# wins across pool processes, and a repaired chain clears the alert.
AUDIT_CHAINS_BROKEN = Gauge(
    "envcat_audit_chains_broken",
    "Tenants whose audit hash chain failed the last verification",
    multiprocess_mode="mostrecent",
)
AUDIT_VERIFIED_AT = Gauge(
    "envcat_audit_verified_timestamp_seconds",
    "Unix time the last audit chain verification finished",
    multiprocess_mode="mostrecent",
)
