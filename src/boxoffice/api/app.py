"""`create_app()`: wires settings, database, booking path, routes and error handling."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from boxoffice import __version__
from boxoffice.api.access import (
    PUBLIC_STATE,
    KeyCheckMiddleware,
    document_security,
    public_paths,
)
from boxoffice.api.body_limit import BodyLimitMiddleware
from boxoffice.api.fast_routes import FastRoutes
from boxoffice.api.problems import install_problem_handlers, move_errors_to_problem_media_type
from boxoffice.api.rate_limits import RateLimiter, RateLimitMiddleware
from boxoffice.api.request_ids import RequestIdMiddleware
from boxoffice.api.request_metrics import RequestCounter
from boxoffice.api.routes import bookings, events, flags, health, holds, keys, waiting_room
from boxoffice.api.security_headers import EXPOSED_HEADERS
from boxoffice.booking import make_booker
from boxoffice.booking.committer_process import SOCKET_ENV as COMMITTER_SOCKET_ENV
from boxoffice.booking.sweeper import Sweeper
from boxoffice.config import Settings, get_settings
from boxoffice.db.database import Database
from boxoffice.db.migrate import check_schema
from boxoffice.db.young_tables import YoungTables
from boxoffice.domain.poll_pacing import PollPacer
from boxoffice.observability.exporter import Exporter
from boxoffice.observability.logging import configure_logging
from boxoffice.services import holds as hold_service
from boxoffice.services.availability import AvailabilityCache
from boxoffice.services.clock import Clock, system_clock
from boxoffice.services.coalesced import Coalesced
from boxoffice.services.flags import FlagDesk
from boxoffice.services.idempotency import InFlight
from boxoffice.services.keys import KeyRing
from boxoffice.services.room_watch import RoomWatch

log = structlog.get_logger("boxoffice")

TAGS = [
    {"name": "events", "description": "Events and their sections; availability is public."},
    {"name": "bookings", "description": "Book seats in one step, list and cancel bookings."},
    {"name": "holds", "description": "Checkout: hold seats while paying, then confirm."},
    {
        "name": "waiting room",
        "description": "On-sale mode: a line in front of the event, paced by its inventory.",
    },
    {"name": "flags", "description": "Suspicious patterns noticed, for a person to look at."},
    {"name": "keys", "description": "API keys, for admins: make, list, revoke."},
    {
        "name": "health",
        "description": "Liveness and readiness for the process manager; metrics for Prometheus.",
    },
]

DESCRIPTION = """
Sell tickets without ever selling a seat twice.

Errors are `application/problem+json` (RFC 9457) with a stable `code`.
Lists are JSON arrays, newest first; the next page is in the `Link` header.
"""


# Young-generation size and the two older generations' periods; see the lifespan.
GC_THRESHOLDS = (20_000, 50, 100)


async def _all(*stops: Awaitable[None]) -> None:
    """Run `stops` together; each runs to its end whatever the others do, then the first
    failure, if any, is raised."""
    for outcome in await asyncio.gather(*stops, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def _operation_id(route: APIRoute) -> str:
    return route.name


def _publish_page_sizes(schema: dict[str, Any], settings: Settings) -> None:
    """Every list's `limit` as configured (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), not as declared."""
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] != "limit":
                    continue
                parameter["description"] = (
                    f"Page size: default {settings.default_page_size}, "
                    f"at most {settings.max_page_size}."
                )
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": settings.max_page_size,
                    "default": settings.default_page_size,
                }


def create_app(
    settings: Settings | None = None,
    database: Database | None = None,
    *,
    clock: Clock = system_clock,
) -> FastAPI:
    """Build the ASGI app. Without arguments it reads the environment (uvicorn's factory).

    `clock` is the time every decision and every read is made at (tests move it).
    """
    if settings is None:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = database or Database.from_settings(settings)
        app.state.database = db
        in_flight = InFlight()
        app.state.in_flight = in_flight
        availability = (
            AvailabilityCache(
                partial(events.read_event_answer, db),
                clock=clock,
                max_staleness=timedelta(milliseconds=settings.availability_max_staleness_ms),
                max_events=settings.availability_cache_events,
            )
            if settings.availability_max_staleness_ms
            else None
        )
        app.state.availability = availability
        booker = make_booker(
            settings.booking_strategy,
            db,
            max_tickets_per_booking=settings.max_tickets_per_booking,
            max_batch_size=settings.max_batch_size,
            clock=clock,
            in_flight=in_flight,
            queue_timeout_seconds=settings.booking_queue_timeout_ms / 1000,
            # This process's own purchases show in its next read of their event.
            on_written=None if availability is None else availability.forget,
            committer_socket=os.environ.get(COMMITTER_SOCKET_ENV),
        )
        app.state.booker = booker
        sweeper = Sweeper(
            db,
            clock=clock,
            interval_seconds=settings.hold_sweep_interval_seconds,
            idempotency_ttl_hours=settings.idempotency_ttl_hours,
        )
        app.state.sweeper = sweeper
        young_tables = YoungTables(db)  # PostgreSQL: a new database's first sale planned well
        app.state.young_tables = young_tables
        app.state.keys = KeyRing(db, cache_seconds=settings.key_cache_seconds)
        # Hold caps read each customer's holds before its hold is queued: the reads of a
        # burst in one query (an on-sale's holds drained the pool one transaction each).
        # A read joins no query already under way: it must see the customer's last hold.
        app.state.hold_records = Coalesced(
            lambda customers: hold_service.hold_records(db, customers, clock()),
            name="hold_records",
            join_in_flight=False,
        )
        flags = FlagDesk(db, settings.fraud_rules) if settings.fraud_flags_enabled else None
        app.state.flags = flags
        exporter = Exporter(
            db,
            sample_seconds=settings.metrics_sample_seconds,
            check_seconds=settings.metrics_check_seconds,
            inventory_sections=settings.metrics_inventory_sections,
            clock=clock,
        )
        app.state.exporter = exporter
        secret, retired = settings.waiting_room_secrets
        room_watch = RoomWatch(
            db,
            clock=clock,
            refresh_seconds=settings.waiting_room_refresh_ms / 1000,
            tick_seconds=settings.waiting_room_tick_ms / 1000,
            clock_skew_seconds=settings.waiting_room_clock_skew_ms / 1000,
            max_poll_seconds=settings.waiting_room_max_poll_seconds,
            polls_per_wait=settings.waiting_room_polls_per_wait,
            shopper_grace_seconds=settings.waiting_room_shopper_grace_seconds,
            secret=secret,
            retired_secrets=retired,
        )
        if settings.boxoffice_open_access:
            # At ERROR, the highest LOG_LEVEL: no setting of it hides this from an operator.
            log.error(
                "OPEN ACCESS: BOXOFFICE_OPEN_ACCESS=true, so no API key is checked and anyone "
                "may create events, read every booking and book for anyone. For local demos "
                "only: never expose this server."
            )
        try:
            await check_schema(db)
            await booker.start()
            await room_watch.start()
            app.state.room_watch = room_watch
            await sweeper.start()
            await young_tables.start()
            if flags is not None:
                await flags.start()
            await exporter.start()
            log.info(f"Database connected successfully ({db.dialect})")
            log.info(f"Server is running on port {settings.port}")
            # Everything loaded so far lives as long as the process: keep it out of
            # the cyclic collector, whose full passes over it stalled requests.
            gc.collect()
            gc.freeze()
            # A booking's request objects live for a batch or two, long enough to
            # survive young collections at the default threshold (700) and to be
            # promoted and scanned again; at 256 connections that cost a booking
            # 25-70 µs of CPU. Measured with wrk side by side (docs/performance.md).
            gc.set_threshold(*GC_THRESHOLDS)
            yield
        finally:
            # Background loops let their pass under way finish (boxoffice/periodic.py):
            # stopped together, they take the longest pass's time, not the sum.
            await _all(sweeper.stop(), young_tables.stop(), room_watch.stop())
            await booker.stop()
            # After the last batches: their counts and flags are written.
            await _all(exporter.stop(), *([] if flags is None else [flags.stop()]))
            if rate_limiter is not None:
                await rate_limiter.close()
            if database is None:
                await db.dispose()

    app = FastAPI(
        title="Boxoffice",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        openapi_tags=TAGS,
        # FastAPI's built-in OpenTelemetry checks, per request, whether anyone listens:
        # 10 to 18 µs of a no-op request's ~150 in-process, for nothing (Boxoffice
        # exports Prometheus metrics, observability/metrics.py).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.flags = None  # the fraud watch, from the lifespan on (services/flags.py)
    app.state.room_watch = None  # the waiting rooms, from the lifespan on (room_watch.py)
    app.state.poll_pacer = PollPacer(settings.max_polls_tracked)
    app.state.availability = None  # GET /events/{id}'s cache, from the lifespan on
    rate_limiter = RateLimiter.from_settings(settings)
    app.state.rate_limiter = rate_limiter
    install_problem_handlers(app)
    # Innermost: a sale's hot writes are answered here, past the key check, the limits and
    # the body limit, without FastAPI's routing and validation (api/fast_routes.py).
    app.add_middleware(
        FastRoutes,
        routes=[bookings.FAST_BOOK, holds.FAST_HOLD, holds.FAST_CONFIRM, waiting_room.FAST_JOIN],
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
    )
    if rate_limiter is not None:
        # Inside the key check (a key's bucket needs the key), outside the body limit (a
        # refused request's body is never read).
        app.add_middleware(RateLimitMiddleware)
    # Outside the body limit: a request without a valid key is refused before its body
    # is read at all.
    app.add_middleware(KeyCheckMiddleware)
    # Outside the key check and the limits, which a poll needs neither of; inside CORS, so
    # a browser's poll gets its headers.
    app.add_middleware(waiting_room.PollFastPath)
    if settings.cors_origins:
        # Outside the key check: a browser's preflight carries no key, and must be
        # answered as such.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=[
                "Admission-Token",  # a web shop buying through the waiting room
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-None-Match",
                "X-Request-ID",
            ],
            expose_headers=[*EXPOSED_HEADERS],
            allow_credentials=False,  # keys travel in a header, never in cookies
            max_age=600,
        )
    # Outermost: every answer, a refusal by any middleware included, carries the request's
    # id, every line logged for it names it, and every request is counted and timed.
    counter = RequestCounter(app)
    app.state.count_request = counter.count  # the polls the server answers itself count too
    app.add_middleware(RequestIdMiddleware, count=counter.count)
    # Routes are matched in order, each tried in turn: the booking and checkout routes,
    # which take nearly all the traffic of a sale, come first. The documentation keeps
    # its own order (TAGS).
    routers = (
        bookings.router,
        holds.router,
        waiting_room.router,
        events.router,
        flags.router,
        keys.router,
        health.router,
    )
    for router in routers:
        app.include_router(router)
    setattr(app.state, PUBLIC_STATE, public_paths(app, routers))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = document_security(move_errors_to_problem_media_type(FastAPI.openapi(app)))
            # The per-booking limit is a setting; publish the one in force.
            for model in ("BookIn", "HoldItemIn"):
                qty = schema["components"]["schemas"][model]["properties"]["qty"]
                qty["maximum"] = settings.max_tickets_per_booking
            _publish_page_sizes(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
