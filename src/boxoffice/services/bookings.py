"""Reading bookings back: one by id, or pages newest first, for one event or one customer.

Each reader sees what its role allows (`domain/access.py`): a customer its own
bookings, an organizer those of its events, an admin all; any other booking is
not found.
"""

from __future__ import annotations

from sqlalchemy import select

from boxoffice.db.database import Database
from boxoffice.db.rows import booking_from_row
from boxoffice.db.tables import bookings, events
from boxoffice.domain.access import Principal
from boxoffice.domain.errors import BookingNotFound
from boxoffice.domain.ids import parse_id
from boxoffice.domain.model import Booking
from boxoffice.services.pages import Cursor, Page
from boxoffice.services.unit_of_work import UnitOfWork


async def get_booking(database: Database, booking_id: str, viewer: Principal) -> Booking:
    ident = parse_id(booking_id)
    if ident is None:
        raise BookingNotFound(booking_id)
    query = (
        select(bookings, events.c.organizer_id)
        .join_from(bookings, events, events.c.id == bookings.c.event_id)
        .where(bookings.c.id == ident)
    )
    async with UnitOfWork(database, write=False) as uow:
        row = (await uow.conn.execute(query)).first()
    if row is None or not viewer.may_see(
        customer_id=row.customer_id, organizer_id=row.organizer_id
    ):
        raise BookingNotFound(booking_id)
    return booking_from_row(row)


async def list_bookings(
    database: Database,
    *,
    viewer: Principal,
    event_id: str | None,
    customer_id: str | None = None,
    limit: int,
    cursor: Cursor | None,
) -> Page[Booking]:
    """One page of bookings, cancelled ones included, newest first.

    An unknown `event_id` or `customer_id` simply has no bookings.
    """
    query = (
        select(bookings)
        .order_by(bookings.c.created_at.desc(), bookings.c.id.desc())
        .limit(limit + 1)
    )
    if event_id is not None:
        ident = parse_id(event_id)
        if ident is None:
            return Page([], None)
        query = query.where(bookings.c.event_id == ident)
    if customer_id is not None:
        query = query.where(bookings.c.customer_id == customer_id)
    if viewer.role == "customer":  # its own, whatever else the filters say
        query = query.where(bookings.c.customer_id == viewer.customer_id)
    elif viewer.role == "organizer":  # its events' only
        query = query.where(
            bookings.c.event_id.in_(
                select(events.c.id).where(events.c.organizer_id == viewer.organizer_id)
            )
        )
    if cursor is not None:
        query = query.where(cursor.older_than(bookings.c.created_at, bookings.c.id))
    async with UnitOfWork(database, write=False) as uow:
        rows = (await uow.conn.execute(query)).all()
    page = rows[:limit]
    next_cursor = Cursor(page[-1].created_at, page[-1].id).encode() if len(rows) > limit else None
    return Page([booking_from_row(row) for row in page], next_cursor)
