"""Prometheus metrics: every counter and gauge the service keeps, named in one place.

These live in the process's default registry and are served at `GET /metrics`
(an admin key, as any Prometheus scrape config can send one). With several
worker processes, each answers with its own counts.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RATE_LIMITED = Counter(
    "boxoffice_rate_limited_requests",
    "Requests refused with 429 by a rate limit, by route class.",
    ["route_class"],
)
RATE_LIMIT_FALLBACKS = Counter(
    "boxoffice_rate_limit_fallbacks",
    "Times Redis stopped answering and rate limits fell back to per-process buckets.",
)
RATE_LIMITS_SHARED = Gauge(
    "boxoffice_rate_limits_shared",
    "1 while rate limits are shared through Redis, 0 while each process limits on its own.",
)
FRAUD_FLAGS = Counter(
    "boxoffice_fraud_flags",
    "Fraud flags raised (domain/fraud.py), by rule.",
    ["rule"],
)
BOOKING_QUEUE_TIMEOUTS = Counter(
    "boxoffice_booking_queue_timeouts",
    "Commands answered 503 overloaded: no batch took them within BOOKING_QUEUE_TIMEOUT_MS.",
)
COMMITTER_RESTARTS = Counter(
    "boxoffice_committer_restarts",
    "Times the group-commit task died and was started again.",
)
