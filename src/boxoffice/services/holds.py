"""Reading a hold back, with its items and its status as of now."""

from __future__ import annotations

from sqlalchemy import select

from boxoffice.db.database import Database
from boxoffice.db.rows import hold_from_row, hold_item_from_row
from boxoffice.db.tables import hold_items, holds
from boxoffice.domain.errors import HoldNotFound
from boxoffice.domain.ids import parse_id
from boxoffice.domain.model import Hold
from boxoffice.services.unit_of_work import UnitOfWork


async def get_hold(database: Database, hold_id: str) -> Hold:
    """The hold as stored; `Hold.status_at(now)` tells whether it has expired since."""
    ident = parse_id(hold_id)
    if ident is None:
        raise HoldNotFound(hold_id)
    async with UnitOfWork(database, write=False) as uow:
        row = (await uow.conn.execute(select(holds).where(holds.c.id == ident))).first()
        if row is None:
            raise HoldNotFound(hold_id)
        items = await uow.conn.execute(
            select(hold_items).where(hold_items.c.hold_id == ident).order_by(hold_items.c.position)
        )
        return hold_from_row(row, [hold_item_from_row(item) for item in items])
