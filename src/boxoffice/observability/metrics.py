"""Prometheus metrics: counted in plain Python where things happen, exported once a second.

    request edge, committer, sweeper ──> LocalCounter.inc / LocalHistogram.observe
                                         (a dict and a bisect: well under a microsecond)
                                              │  flush(): every second (observability/
                                              ▼  exporter.py), at shutdown, and per scrape
                 prometheus-client's metrics (in its multiprocess mode with several workers)
                                              │
                                        GET /metrics

With several workers, prometheus-client keeps every value in a memory-mapped
file per process (`PROMETHEUS_MULTIPROC_DIR`, observability/multiprocess.py),
and a scrape reads them all. Measured on this machine, a labelled
`Counter.inc()` costs 2.3 µs and a `Histogram.observe()` 3.9 µs in that mode
when the machine is quiet, 12 and 14 µs when it is busy (1.5 and 2.2 µs in one
process), while a whole booking costs the server 200-280 µs of CPU. So
nothing on the request path calls prometheus-client: the local metrics below
add to a dict (0.13 µs; a histogram finds its bucket with `bisect`, 0.29 µs),
and `flush()` adds what accumulated since the last flush, one write per
series touched, whatever the number of requests (docs/performance.md).

Every metric this service exports is declared here, as a local metric with
its Prometheus name, help and labels. The Prometheus objects are made at the
first flush, in the process that serves: any other process that imports this
module (SQLite's writer, the command line) creates no file in the shared
directory, and so can never make a live gauge read wrong.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from boxoffice.domain.decisions import Changes

Labels = tuple[str | int, ...]  # label values; prometheus-client makes them strings
GaugeMode = str  # prometheus-client's multiprocess_mode: "livesum", "livemin", ...

LocalMetric: TypeAlias = "LocalCounter | LocalHistogram | LocalGauge"
_ALL: list[LocalMetric] = []


class _LocalMetric:
    """What every local metric has: its Prometheus name, help, labels and registry; and its
    place in the list a flush walks."""

    __slots__ = ("_registry", "documentation", "labelnames", "name")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
        flushed: list[LocalMetric] | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._registry = registry
        if flushed is not None:
            flushed.append(self)  # type: ignore[arg-type]  # only subclasses are made


class LocalCounter(_LocalMetric):
    """A Prometheus counter, counted in this process and added to the real one at each flush."""

    __slots__ = ("_counts", "_exported")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry | None = REGISTRY,
        flushed: list[LocalMetric] | None = _ALL,
    ) -> None:
        self._counts: dict[Labels, float] = {}
        self._exported: Counter | None = None
        super().__init__(name, documentation, labelnames, registry, flushed)

    def inc(self, labels: Labels = (), amount: float = 1) -> None:
        counts = self._counts
        counts[labels] = counts.get(labels, 0) + amount

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        if self._exported is None:  # made at the first flush, so it shows 0 until counted
            self._exported = Counter(
                self.name, self.documentation, self.labelnames, registry=self._registry
            )
        for labels, amount in counts.items():
            (self._exported.labels(*labels) if labels else self._exported).inc(amount)


class LocalHistogram(_LocalMetric):
    """A Prometheus histogram: per label values, a count per bucket and a sum, added at flush."""

    __slots__ = ("_bounds", "_exported", "_series", "buckets")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
        flushed: list[LocalMetric] | None = _ALL,
    ) -> None:
        self.buckets = tuple(buckets)  # upper bounds, ascending; +Inf is added
        self._bounds = self.buckets
        # Per label values: one count per bucket (the last one +Inf), then the sum.
        self._series: dict[Labels, list[float]] = {}
        self._exported: Histogram | None = None
        super().__init__(name, documentation, labelnames, registry, flushed)

    def observe(self, value: float, labels: Labels = ()) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self._bounds) + 2)
        # Prometheus' `le`: the first bucket whose bound is >= value.
        series[bisect_left(self._bounds, value)] += 1
        series[-1] += value

    def flush(self) -> None:
        taken, self._series = self._series, {}
        if self._exported is None:
            self._exported = Histogram(
                self.name,
                self.documentation,
                self.labelnames,
                buckets=self.buckets,
                registry=self._registry,
            )
        for labels, series in taken.items():
            child = self._exported.labels(*labels) if labels else self._exported
            # prometheus-client has no way to add n observations at once; its child keeps
            # one (non-cumulative) value per bucket and the sum, as `observe` adds to them.
            buckets = child._buckets
            for index, count in enumerate(series[:-1]):
                if count:
                    buckets[index].inc(count)
            child._sum.inc(series[-1])


class LocalGauge(_LocalMetric):
    """A Prometheus gauge: the values set since the last flush are written at the next one.

    `mode` is how the values of several processes combine (prometheus-client's
    `multiprocess_mode`); one process's own value is the last one set.
    """

    __slots__ = ("_exported", "_values", "mode")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        mode: GaugeMode,
        registry: CollectorRegistry | None = REGISTRY,
        flushed: list[LocalMetric] | None = _ALL,
    ) -> None:
        self.mode = mode
        self._values: dict[Labels, float] = {}
        self._exported: Gauge | None = None
        super().__init__(name, documentation, labelnames, registry, flushed)

    def set(self, value: float, labels: Labels = ()) -> None:
        self._values[labels] = value

    def set_all(self, values: Iterable[tuple[Labels, float]]) -> None:
        self._values.update(values)

    def flush(self) -> None:
        values, self._values = self._values, {}
        if not values:
            # Not made until set: a gauge made shows 0, which would read as a value (a
            # database down, no violation) from a process that has not looked yet.
            return
        if self._exported is None:
            self._exported = Gauge(
                self.name,
                self.documentation,
                self.labelnames,
                registry=self._registry,
                multiprocess_mode=self.mode,  # type: ignore[arg-type]
            )
        for labels, value in values.items():
            (self._exported.labels(*labels) if labels else self._exported).set(value)


def flush(metrics: Iterable[LocalMetric] = _ALL) -> None:
    """Add what every local metric counted since the last flush to the exported ones.

    Synchronous, with no await: nothing counted meanwhile can be lost or counted twice.
    """
    for metric in metrics:
        metric.flush()


# The request edge (api/request_metrics.py, api/problems.py) ----------------------------

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = LocalHistogram(
    "boxoffice_http_request_duration_seconds",
    "Requests answered, and how long each took from its head to its last byte, by route "
    "template (unmatched: no route), method and status. Its _count is the request count.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
REFUSALS = LocalCounter(
    "boxoffice_refusals",
    "Requests answered with a problem document, by its code (insufficient_seats, "
    "rate_limited, service_unavailable, internal_error, ...).",
    ["code"],
)

# What the committed batches did (counted once per batch, from its effects) --------------

BOOKINGS = LocalCounter(
    "boxoffice_bookings", "Bookings made: booked at once, or from a confirmed hold's items."
)
TICKETS_SOLD = LocalCounter("boxoffice_tickets_sold", "Seats sold by those bookings.")
HOLDS_PLACED = LocalCounter("boxoffice_holds_placed", "Holds placed.")
HOLDS_CONFIRMED = LocalCounter("boxoffice_holds_confirmed", "Holds confirmed (paid).")
HOLDS_RELEASED = LocalCounter("boxoffice_holds_released", "Holds released by their customer.")
HOLDS_EXPIRED = LocalCounter(
    "boxoffice_holds_expired",
    "Holds found expired and settled (by a batch on their section, or the sweeper).",
)
BOOKINGS_CANCELLED = LocalCounter("boxoffice_bookings_cancelled", "Bookings cancelled.")


def count_changes(changes: Changes) -> None:
    """Count what a committed batch did (once per batch, never per request)."""
    for metric, amount in (
        (BOOKINGS, changes.bookings),
        (TICKETS_SOLD, changes.tickets_sold),
        (HOLDS_PLACED, changes.holds_placed),
        (HOLDS_CONFIRMED, changes.holds_confirmed),
        (HOLDS_RELEASED, changes.holds_released),
        (HOLDS_EXPIRED, changes.holds_expired),
        (BOOKINGS_CANCELLED, changes.bookings_cancelled),
    ):
        if amount:
            metric.inc((), amount)


# The group commit (booking/batched.py) ---------------------------------------------------

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

BATCH_COMMANDS = LocalHistogram(
    "boxoffice_batch_commands",
    "Commands per group-commit batch.",
    buckets=BATCH_SIZE_BUCKETS,
)
COMMIT_SECONDS = LocalHistogram(
    "boxoffice_batch_commit_duration_seconds",
    "How long a group-commit batch took, from its start to every command's answer.",
    buckets=COMMIT_BUCKETS,
)
QUEUE_WAIT_SECONDS = LocalHistogram(
    "boxoffice_booking_queue_wait_seconds",
    "How long each command waited in the group commit's queue: until its batch began, or "
    "until BOOKING_QUEUE_TIMEOUT_MS gave it up (503 overloaded).",
    buckets=COMMIT_BUCKETS,
)
BOOKING_QUEUE_TIMEOUTS = LocalCounter(
    "boxoffice_booking_queue_timeouts",
    "Commands answered 503 overloaded: no batch took them within BOOKING_QUEUE_TIMEOUT_MS.",
)
BATCH_PATHS = LocalCounter(
    "boxoffice_batch_paths",
    "Group-commit batches on PostgreSQL by how they were decided: path 'memory' (one "
    "statement from remembered sections, reason 'unchanged') or 'locked' (under row locks, "
    "with the reason memory could not take it: booking/remembered.py).",
    ["path", "reason"],
)
BATCH_WRITES = LocalHistogram(
    "boxoffice_batch_write_seconds",
    "How long a group-commit batch's write took on PostgreSQL, by path: 'memory' (its one "
    "statement, a round trip) or 'locked' (its transaction under row locks: about how long "
    "it held them, which other processes' batches on those rows wait for).",
    ["path"],
    buckets=COMMIT_BUCKETS,
)
COMMITTER_RESTARTS = LocalCounter(
    "boxoffice_committer_restarts",
    "Times the group-commit task died and was started again.",
)

# The database (sampled by observability/exporter.py) -------------------------------------

POOL_CHECKED_OUT = LocalGauge(
    "boxoffice_database_pool_checked_out_connections",
    "Connections in use, by pool (PostgreSQL: readers, writers; SQLite: shared), summed over "
    "live processes. The committer keeps two writers' connections.",
    ["pool"],
    mode="livesum",
)
POOL_SIZE = LocalGauge(
    "boxoffice_database_pool_size_connections",
    "Connections each pool may open, summed over live processes.",
    ["pool"],
    mode="livesum",
)
DATABASE_UP = LocalGauge(
    "boxoffice_database_up",
    "1 if the database answered this process's last probe, else 0 (lowest over live processes).",
    mode="livemin",
)
DATABASE_SERVER_CHANGES = LocalCounter(
    "boxoffice_database_server_changes",
    "Times a process found a different PostgreSQL server answering than at its previous "
    "probe (address, port or start time): a failover, or a restart.",
)

# Inventory (observability/exporter.py, at most every METRICS_INVENTORY_SECONDS) ---------

SECTION_SEATS = LocalGauge(
    "boxoffice_section_seats",
    "Seats of a watched section by state (remaining, held, sold), as last read.",
    ["event_id", "section_id", "section", "state"],
    mode="livemostrecent",
)
SECTION_CAPACITY = LocalGauge(
    "boxoffice_section_capacity_seats",
    "Capacity of a watched section.",
    ["event_id", "section_id", "section"],
    mode="livemostrecent",
)
INVENTORY_VIOLATIONS = LocalGauge(
    "boxoffice_inventory_violations",
    "Invariants the watched sections broke at the last look (negative counts, seats not "
    "adding up, held or sold not matching the holds and bookings behind them). Never > 0.",
    mode="livemostrecent",
)
INVENTORY_CHECKED = LocalGauge(
    "boxoffice_inventory_checked_timestamp_seconds",
    "When the watched sections were last read and checked (Unix time).",
    mode="livemax",
)

# Rate limits and the fraud watch (api/rate_limits.py, services/) -----------------------

RATE_LIMITED = LocalCounter(
    "boxoffice_rate_limited_requests",
    "Requests refused with 429 by a rate limit, by route class.",
    ["route_class"],
)
RATE_LIMIT_FALLBACKS = LocalCounter(
    "boxoffice_rate_limit_fallbacks",
    "Times Redis stopped answering and rate limits fell back to per-process buckets.",
)
RATE_LIMITS_SHARED = LocalGauge(
    "boxoffice_rate_limits_shared",
    "1 while rate limits are shared through Redis, 0 while a process limits on its own "
    "(lowest over live processes).",
    mode="livemin",
)
FRAUD_FLAGS = LocalCounter(
    "boxoffice_fraud_flags",
    "Fraud flags raised (domain/fraud.py), by rule.",
    ["rule"],
)

# Event reads (services/availability.py) ---------------------------------------------------

AVAILABILITY_LOOKUPS = LocalCounter(
    "boxoffice_availability_cache_lookups",
    "GET /events/{id} answers looked up in the process's availability cache, by result: "
    "hit (an entry within AVAILABILITY_MAX_STALENESS_MS) or miss (read, or waited for the "
    "read in flight).",
    ["result"],
)
AVAILABILITY_REFRESHES = LocalCounter(
    "boxoffice_availability_cache_refreshes",
    "Database reads made to refresh the availability cache: one per event per miss, however "
    "many requests missed together.",
)

# The waiting room (api/routes/waiting_room.py, services/room_watch.py) ------------------

QUEUE_JOINS = LocalCounter("boxoffice_queue_joins", "Joins of a waiting room's line answered.")
COALESCED_READS = LocalHistogram(
    "boxoffice_coalesced_read_seconds",
    "How long each query of coalesced reads took (services/coalesced.py), by what it reads: "
    "api_keys, hold_records (hold caps), events_of_holds, events_of_bookings.",
    ["read"],
    buckets=COMMIT_BUCKETS,
)
EVENT_LOOP_LAG = LocalHistogram(
    "boxoffice_event_loop_lag_seconds",
    "How late this process's event loop ran a timer due every 0.1 s "
    "(observability/loop_lag.py): every request waits about this long at each of its steps.",
    buckets=COMMIT_BUCKETS,
)
QUEUE_JOIN_WRITES = LocalHistogram(
    "boxoffice_queue_join_write_seconds",
    "How long each write of queued joins took (one transaction for a burst of joins, "
    "services/line_joiner.py): a join waits for the write in progress, then its own.",
    buckets=COMMIT_BUCKETS,
)
QUEUE_POLLS = LocalCounter(
    "boxoffice_queue_polls",
    "Polls of a queue ticket answered, by the status told (waiting, admitted, expired, "
    "sold_out); refused ones are counted as refusals (poll_too_soon, queue_ticket_invalid).",
    ["status"],
)
QUEUE_ADMITTED = LocalCounter(
    "boxoffice_queue_admitted", "Customers let in by the admission loop, over every room."
)
QUEUE_WAITING = LocalGauge(
    "boxoffice_queue_waiting_customers",
    "Customers waiting in an event's line, as its admission loop last measured.",
    ["event_id"],
    mode="livemostrecent",
)
QUEUE_SHOPPING = LocalGauge(
    "boxoffice_queue_shopping_customers",
    "Admitted customers of an event still within their session who have not bought yet.",
    ["event_id"],
    mode="livemostrecent",
)
