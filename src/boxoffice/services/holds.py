"""Reading a hold back, with its items and its status as of now."""

from __future__ import annotations

from sqlalchemy import select

from boxoffice.db.database import Database
from boxoffice.db.rows import hold_from_row, hold_item_from_row
from boxoffice.db.tables import events, hold_items, holds
from boxoffice.domain.access import Principal
from boxoffice.domain.errors import HoldNotFound
from boxoffice.domain.ids import parse_id
from boxoffice.domain.model import Hold
from boxoffice.services.unit_of_work import UnitOfWork


async def get_hold(database: Database, hold_id: str, viewer: Principal) -> Hold:
    """The hold as stored; `Hold.status_at(now)` tells whether it has expired since.

    A hold `viewer` may not see (`domain/access.py`) is not found.
    """
    ident = parse_id(hold_id)
    if ident is None:
        raise HoldNotFound(hold_id)
    query = (
        select(holds, events.c.organizer_id)
        .join_from(holds, events, events.c.id == holds.c.event_id)
        .where(holds.c.id == ident)
    )
    async with UnitOfWork(database, write=False) as uow:
        row = (await uow.conn.execute(query)).first()
        if row is None or not viewer.may_see(
            customer_id=row.customer_id, organizer_id=row.organizer_id
        ):
            raise HoldNotFound(hold_id)
        items = await uow.conn.execute(
            select(hold_items).where(hold_items.c.hold_id == ident).order_by(hold_items.c.position)
        )
        return hold_from_row(row, [hold_item_from_row(item) for item in items])
