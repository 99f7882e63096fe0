"""Reading bookings back: one by id, or pages newest first, optionally for one event."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select

from boxoffice.db.database import Database
from boxoffice.db.tables import bookings
from boxoffice.domain.errors import BookingNotFound
from boxoffice.domain.model import Booking
from boxoffice.services.ids import parse_id
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
    database: Database, *, event_id: str | None, limit: int, cursor: Cursor | None
) -> Page[Booking]:
    """One page of bookings, newest first; an unknown `event_id` has no bookings."""
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
    if cursor is not None:
        query = query.where(cursor.older_than(bookings.c.created_at, bookings.c.id))
    async with UnitOfWork(database, write=False) as uow:
        rows = (await uow.conn.execute(query)).all()
    page = rows[:limit]
    next_cursor = Cursor(page[-1].created_at, page[-1].id).encode() if len(rows) > limit else None
    return Page([booking_from_row(row) for row in page], next_cursor)


def booking_from_row(row: Row[Any]) -> Booking:
    return Booking(
        id=str(row.id),
        event_id=str(row.event_id),
        section_id=str(row.section_id),
        qty=row.qty,
        unit_price_cents=row.unit_price_cents,
        created_at=row.created_at,
        status=row.status,
    )
