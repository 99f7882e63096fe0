"""Reading holds back: one with its items and its status as of now, or a customer's record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, case, func, select, type_coerce

from boxoffice.db.database import Database
from boxoffice.db.driver import in_list
from boxoffice.db.rows import hold_from_row, hold_item_from_row
from boxoffice.db.tables import events, hold_items, holds
from boxoffice.db.types import UTCDateTime
from boxoffice.domain.access import Principal
from boxoffice.domain.errors import HoldNotFound
from boxoffice.domain.hold_caps import CHURN_WINDOW, HoldRecord
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


async def hold_records(
    database: Database, customer_ids: Sequence[str], now: datetime
) -> list[HoldRecord]:
    """How many holds each of `customer_ids` has active, and has given up within the hour,
    in that order, in one query for them all.

    Every hold that counts expires after the hour began (one released was released
    before its expiry), so this reads one range of `ix_holds_customer_id_expires_at`
    per customer. An active hold past its expiry has lapsed: given up, not active.
    """
    since = now - CHURN_WINDOW
    active = and_(holds.c.status == "active", holds.c.expires_at > now)
    released = and_(holds.c.status == "released", holds.c.settled_at > since)
    lapsed = and_(holds.c.status.in_(("active", "expired")), holds.c.expires_at <= now)
    given_up_at = case((released, holds.c.settled_at), (lapsed, holds.c.expires_at), else_=None)
    query = (
        select(
            holds.c.customer_id,
            func.count().filter(active).label("active"),
            func.count(given_up_at).label("churned"),
            type_coerce(func.min(given_up_at), UTCDateTime()).label("oldest"),
        )
        .where(holds.c.customer_id.in_(in_list(set(customer_ids))), holds.c.expires_at > since)
        .group_by(holds.c.customer_id)
    )
    # One statement, on its own: no BEGIN and ROLLBACK round trips (it is on a hold's path).
    async with UnitOfWork(database, write=False, single_statement=True) as uow:
        found = {
            row.customer_id: HoldRecord(int(row.active or 0), int(row.churned or 0), row.oldest)
            for row in await uow.conn.execute(query)
        }
    return [found.get(customer, HoldRecord(0, 0, None)) for customer in customer_ids]
