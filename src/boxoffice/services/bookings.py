"""Reading bookings back: one by id, or pages newest first, for one event or one customer."""

from __future__ import annotations

from sqlalchemy import select

from boxoffice.db.database import Database
from boxoffice.db.rows import booking_from_row
from boxoffice.db.tables import bookings
from boxoffice.domain.errors import BookingNotFound
from boxoffice.domain.ids import parse_id
from boxoffice.domain.model import Booking
from boxoffice.services.pages import Cursor, Page
from boxoffice.services.unit_of_work import UnitOfWork


async def get_booking(database: Database, booking_id: str) -> Booking:
    ident = parse_id(booking_id)
    if ident is None:
        raise BookingNotFound(booking_id)
    async with UnitOfWork(database, write=False) as uow:
        row = (await uow.conn.execute(select(bookings).where(bookings.c.id == ident))).first()
    if row is None:
        raise BookingNotFound(booking_id)
    return booking_from_row(row)


async def list_bookings(
    database: Database,
    *,
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
    if cursor is not None:
        query = query.where(cursor.older_than(bookings.c.created_at, bookings.c.id))
    async with UnitOfWork(database, write=False) as uow:
        rows = (await uow.conn.execute(query)).all()
    page = rows[:limit]
    next_cursor = Cursor(page[-1].created_at, page[-1].id).encode() if len(rows) > limit else None
    return Page([booking_from_row(row) for row in page], next_cursor)
