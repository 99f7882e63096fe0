"""Take seats and record the booking inside the caller's transaction.

The seat decrement is one conditional UPDATE:

    UPDATE sections SET remaining = remaining - :qty
     WHERE id = :section AND event_id = :event AND remaining >= :qty
    RETURNING price_cents

It either takes all the seats or matches no row; there is no window between
the check and the write for another request to slip into. The CHECK constraint
`remaining >= 0` backs it up. The booking row is inserted in the same
transaction, so a crash can leave neither seats without a booking nor a
booking without seats.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NoReturn

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.booking.batch import Outcome, explain_unknown
from boxoffice.db.tables import bookings, sections
from boxoffice.domain.errors import EventNotFound, InsufficientSeats, NotFound
from boxoffice.domain.model import Booking, BookingRequest
from boxoffice.services.ids import new_id, parse_id

# Built once: SQLAlchemy then reuses the compiled form from its cache.
_TAKE_SEATS_IF_LEFT = (
    update(sections)
    .where(
        sections.c.id == bindparam("section"),
        sections.c.event_id == bindparam("event"),
        sections.c.remaining >= bindparam("qty"),
    )
    .values(remaining=sections.c.remaining - bindparam("qty"))
    .returning(sections.c.price_cents)
)
_RECORD_BOOKING = insert(bookings)


async def reserve_seats(conn: AsyncConnection, request: BookingRequest, now: datetime) -> Booking:
    """Decrement the section and insert a confirmed booking; raise if it cannot be done.

    On a raise nothing has been written by this call that the caller must keep:
    the caller rolls the transaction back.
    """
    event_id = parse_id(request.event_id)
    if event_id is None:
        raise EventNotFound(request.event_id)
    section_id = parse_id(request.section_id)
    if section_id is None:
        await _raise_why_not(conn, event_id, None, request)
    taken = (
        await conn.execute(
            _TAKE_SEATS_IF_LEFT, {"section": section_id, "event": event_id, "qty": request.qty}
        )
    ).first()
    if taken is None:
        await _raise_why_not(conn, event_id, section_id, request)
    booking_id = new_id()
    await conn.execute(
        _RECORD_BOOKING,
        [
            {
                "id": booking_id,
                "event_id": event_id,
                "section_id": section_id,
                "qty": request.qty,
                "unit_price_cents": taken.price_cents,
                "total_price_cents": taken.price_cents * request.qty,
                "status": "confirmed",
                "created_at": now,
            }
        ],
    )
    return Booking(
        id=str(booking_id),
        event_id=str(event_id),
        section_id=str(section_id),
        qty=request.qty,
        unit_price_cents=taken.price_cents,
        created_at=now,
    )


async def _raise_why_not(
    conn: AsyncConnection,
    event_id: uuid.UUID,
    section_id: uuid.UUID | None,
    request: BookingRequest,
) -> NoReturn:
    """Explain a booking that took no seats: unknown event, unknown section, or sold out."""
    if section_id is not None:
        remaining = (
            await conn.execute(
                select(sections.c.remaining).where(
                    sections.c.id == section_id, sections.c.event_id == event_id
                )
            )
        ).scalar_one_or_none()
        if remaining is not None:
            raise InsufficientSeats(requested=request.qty, remaining=remaining)
    outcomes: list[Outcome | None] = [None]
    target = (str(event_id), None if section_id is None else str(section_id))
    await conn.run_sync(explain_unknown, [request], [target], outcomes)
    assert isinstance(outcomes[0], NotFound)
    raise outcomes[0]
