"""Customer endpoints: book seats, read bookings back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from boxoffice.api.deps import DatabaseDep, PageDep
from boxoffice.api.problems import problem_responses
from boxoffice.api.routes.links import LINK_HEADER_DOC, set_next_link
from boxoffice.api.schemas import BookIn, BookingOut
from boxoffice.booking import Booker
from boxoffice.domain.model import BookingRequest
from boxoffice.services import bookings as booking_service

router = APIRouter(tags=["bookings"])


@router.post(
    "/book",
    status_code=201,
    response_model=BookingOut,
    responses=problem_responses(400, 404, 413, 503),
    summary="Book seats in a section: all of them, or none",
)
async def book(body: BookIn, request: Request, response: Response) -> BookingOut:
    # The hot path takes the booker straight from app state: no dependency to resolve.
    booker: Booker = request.app.state.booker
    booking = await booker.book(
        BookingRequest(event_id=body.event_id, section_id=body.section_id, qty=body.qty)
    )
    # Not request.url_for: it walks every route, a cost paid on each booking.
    response.headers["Location"] = f"/bookings/{booking.id}"
    return BookingOut.of(booking)


@router.get(
    "/bookings",
    response_model=list[BookingOut],
    responses={200: {"headers": LINK_HEADER_DOC}, **problem_responses(400, 503)},
    summary="Bookings, newest first, paginated",
)
async def list_bookings(
    request: Request,
    response: Response,
    database: DatabaseDep,
    page: PageDep,
    event_id: Annotated[
        str | None, Query(alias="eventId", description="Only this event's bookings.")
    ] = None,
) -> list[BookingOut]:
    found = await booking_service.list_bookings(
        database, event_id=event_id, limit=page.limit, cursor=page.cursor
    )
    set_next_link(request, response, found.next_cursor)
    return [BookingOut.of(booking) for booking in found.items]


@router.get(
    "/bookings/{booking_id}",
    response_model=BookingOut,
    responses=problem_responses(404, 503),
    summary="One booking",
)
async def get_booking(booking_id: str, database: DatabaseDep) -> BookingOut:
    return BookingOut.of(await booking_service.get_booking(database, booking_id))
