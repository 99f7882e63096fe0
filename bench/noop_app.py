"""The ceiling: the same web stack (uvicorn, FastAPI, our middleware, pydantic) with no database.

`POST /noop` parses a booking body exactly like `POST /book` and answers a
201 booking, so the gap between this and `/book` is the cost of booking. It is
a fair ceiling, not a flattering one:

- it is routed like `/book`: an included router, placed where the bookings
  router is, so matching it costs what matching `/book` costs (mounted last,
  it paid ~6 µs a request more for scanning every other router first);
- it makes no booking id: ids belong to booking, and `uuid4()` per request
  (a system call each) cost the ceiling ~8 µs a request that `/book`, whose
  committer makes ids in bulk, does not pay.

It is a FastAPI route, as every route of ours but a sale's hot writes is:
since `FastRoutes` (api/fast_routes.py) answers `POST /book`, `/holds` and a
hold's confirm below FastAPI, a booking no longer pays the routing, parsing
and validation this ceiling pays, so the gap to it is the booking's cost less
what skipping FastAPI saves. The bare ceiling (`bench/bare_app.py`) is the
yardstick that moves with neither (docs/performance.md).

Benchmark-only: it is never mounted in the product.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import _IncludedRouter

from boxoffice.api.app import create_app
from boxoffice.api.deps import IDEMPOTENCY_KEY_DOC, idempotency_key
from boxoffice.api.routes import bookings
from boxoffice.api.schemas import BookIn, BookingOut

NO_ID = "00000000-0000-4000-8000-000000000000"

router = APIRouter()


@router.post("/noop", status_code=201, response_model=BookingOut, openapi_extra=IDEMPOTENCY_KEY_DOC)
async def noop(body: BookIn, request: Request, response: Response) -> BookingOut:
    """Parses and answers exactly what `POST /book` does, headers included."""
    idempotency_key(request)
    response.headers["Location"] = f"/bookings/{NO_ID}"
    return BookingOut(
        id=NO_ID,
        event_id=body.event_id,
        section_id=body.section_id,
        qty=body.qty,
        unit_price=Decimal("5.00"),
        total_price=Decimal("5.00") * body.qty,
        status="confirmed",
        created_at=datetime.now(UTC),
        customer_id=body.customer_id,
        hold_id=None,
        payment_reference=None,
        cancelled_at=None,
    )


def create_noop_app() -> FastAPI:
    app = create_app()
    app.include_router(router)
    routes = app.router.routes
    ours = routes.pop()
    at = next(
        (
            index
            for index, route in enumerate(routes)
            if isinstance(route, _IncludedRouter) and route.original_router is bookings.router
        ),
        None,
    )
    if at is None:  # FastAPI changed how it keeps included routers: say so, don't skew
        raise RuntimeError("cannot find the bookings router to put /noop next to it")
    routes.insert(at, ours)
    return app
