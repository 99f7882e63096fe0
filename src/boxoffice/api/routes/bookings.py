"""Book seats, read bookings back, cancel them: each caller its own (`domain/access.py`)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from boxoffice.api.access import caller
from boxoffice.api.admission import PURCHASE_HEADERS_DOC, check_admission
from boxoffice.api.deps import (
    IDEMPOTENCY_KEY_DOC,
    BookerDep,
    DatabaseDep,
    PageDep,
    idempotency_key,
)
from boxoffice.api.fast_routes import FastRoute, with_body
from boxoffice.api.fraud import caller_of
from boxoffice.api.operation_links import CREATED_BOOKING, links
from boxoffice.api.problems import problem_responses
from boxoffice.api.request_ids import request_id
from boxoffice.api.routes.links import LINK_HEADER_DOC, set_next_link
from boxoffice.api.schemas import BookIn, BookingOut, CustomerId
from boxoffice.booking import Booker
from boxoffice.domain.commands import Book, CancelBooking
from boxoffice.domain.model import Booking
from boxoffice.services import bookings as booking_service
from boxoffice.services.flags import FlagDesk
from boxoffice.services.idempotency import idempotency

router = APIRouter(tags=["bookings"])


@router.post(
    "/book",
    status_code=201,
    response_model=BookingOut,
    responses={**links(CREATED_BOOKING), **problem_responses(400, 403, 404, 409, 413, 422, 503)},
    summary="Book seats in a section: all of them, or none",
    openapi_extra=PURCHASE_HEADERS_DOC,
)
async def book(body: BookIn, request: Request, response: Response) -> BookingOut:
    # Answered by FAST_BOOK below FastAPI; this route answers what that does not read.
    booking = await book_seats(request, body)
    response.headers["Location"] = booking_location(booking)
    return booking


async def book_seats(request: Request, body: BookIn) -> BookingOut:
    """Books `body`'s seats for the caller, in one group-commit batch; raises the refusals."""
    state = request.app.state
    booker: Booker = state.booker
    actor = caller(request, "book")
    customer = actor.customer_for(body.customer_id)
    check_admission(request, body.event_id, customer, actor)
    given = idempotency_key(request)
    key = (
        None
        if given is None
        else idempotency(
            given,
            scope=actor.idempotency_scope(customer),
            operation="book",
            request=(body.event_id, body.section_id, body.qty, customer),
        )
    )
    booking = await booker.submit(
        Book(
            body.event_id,
            body.section_id,
            body.qty,
            customer,
            key,
            request_id(request),
            actor,
        )
    )
    assert isinstance(booking, Booking)
    flags: FlagDesk | None = state.flags
    if flags is not None:
        flags.purchase(
            booking.created_at,
            caller_of(request.scope, customer),
            booking.event_id,
            booking.qty,
            state.settings.max_tickets_per_booking,
        )
    return BookingOut.of(booking)


def booking_location(booking: BookingOut) -> str:
    # Not request.url_for: it walks every route, a cost paid on each booking.
    return f"/bookings/{booking.id}"


FAST_BOOK = FastRoute(
    router,
    "book",
    re.compile("/book"),
    BookIn,
    True,
    with_body(book_seats),
    location=booking_location,
)


@router.get(
    "/bookings",
    response_model=list[BookingOut],
    responses={200: {"headers": LINK_HEADER_DOC}, **problem_responses(400, 503)},
    summary="Bookings, newest first, paginated; cancelled ones included",
)
async def list_bookings(
    request: Request,
    response: Response,
    database: DatabaseDep,
    page: PageDep,
    event_id: Annotated[
        str | None, Query(alias="eventId", description="Only this event's bookings.")
    ] = None,
    customer_id: Annotated[
        CustomerId | None, Query(alias="customerId", description="Only this customer's bookings.")
    ] = None,
) -> list[BookingOut]:
    viewer = caller(request, "list_bookings")
    found = await booking_service.list_bookings(
        database,
        viewer=viewer,
        event_id=event_id,
        customer_id=customer_id,
        limit=page.limit,
        cursor=page.cursor,
    )
    set_next_link(request, response, found.next_cursor)
    return [BookingOut.of(booking) for booking in found.items]


@router.get(
    "/bookings/{booking_id}",
    response_model=BookingOut,
    responses=problem_responses(404, 503),
    summary="One booking",
)
async def get_booking(booking_id: str, request: Request, database: DatabaseDep) -> BookingOut:
    viewer = caller(request, "get_booking")
    return BookingOut.of(await booking_service.get_booking(database, booking_id, viewer))


@router.post(
    "/bookings/{booking_id}/cancel",
    response_model=BookingOut,
    responses=problem_responses(400, 404, 409, 422, 503),
    summary="Cancel a booking: its seats are free again (repeating it changes nothing)",
    openapi_extra=IDEMPOTENCY_KEY_DOC,
)
async def cancel_booking(
    booking_id: str,
    request: Request,
    booker: BookerDep,
) -> BookingOut:
    actor = caller(request, "cancel_booking")
    key = idempotency(
        idempotency_key(request),
        scope=actor.idempotency_scope(),
        operation="cancel",
        request={"bookingId": booking_id},
    )
    booking = await booker.submit(CancelBooking(booking_id, key, request_id(request), actor))
    assert isinstance(booking, Booking)
    return BookingOut.of(booking)
