"""The event of a hold or a booking named by id alone, learnt before its transaction.

Confirm, release and cancel name only a hold or a booking (`POST
/holds/{id}/confirm`, `DELETE /holds/{id}`, `POST /bookings/{id}/cancel`).
Every statement of their write transaction names the event as well
(docs/scaling.md: on a database distributed by event that keeps the
transaction on one shard), so the booker asks first: a read by id, on the
read pool, outside any write transaction; the reads of a burst of checkouts
are one query (`services/coalesced.py`).

A hold's or a booking's event never changes, so each answer is kept, bounded
(least recently used dropped first), and so is the event of every hold this
process places: a checkout confirmed by the process that placed its hold reads
nothing more. An id that names nothing is not kept; its command goes to its
batch without an event, where it is not found (404, stored with its
idempotency key like any other answer), as before.

With several processes, half of the checkouts (with two) are confirmed by a
process that did not place the hold. Given `on_hold`, the same read brings the
whole hold, items included, and hands it over: the committer then decides its
confirmation from memory like one of its own (`remembered.py`; the write checks
that the hold is still active).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace

from sqlalchemy import Select, and_, bindparam, select

from boxoffice.booking.load import as_uuid
from boxoffice.db.database import Database
from boxoffice.db.driver import in_list
from boxoffice.db.rows import holds_from_rows
from boxoffice.db.tables import bookings, hold_items, holds
from boxoffice.domain.commands import CancelBooking, Command, ConfirmHold, ReleaseHold
from boxoffice.domain.ids import cached_canonical_id
from boxoffice.domain.model import Hold
from boxoffice.services.coalesced import Coalesced
from boxoffice.services.unit_of_work import UnitOfWork

_EVENTS_OF_HOLDS = select(holds.c.id, holds.c.event_id).where(
    holds.c.id.in_(bindparam("ids", expanding=True))
)
_HOLDS_WITH_ITEMS = (
    select(
        holds,
        hold_items.c.position,
        hold_items.c.section_id,
        hold_items.c.qty,
        hold_items.c.unit_price_cents,
        hold_items.c.active,
    )
    .join(
        hold_items,
        and_(hold_items.c.hold_id == holds.c.id, hold_items.c.event_id == holds.c.event_id),
    )
    .where(holds.c.id.in_(bindparam("ids", expanding=True)))
)
_EVENTS_OF_BOOKINGS = select(bookings.c.id, bookings.c.event_id).where(
    bookings.c.id.in_(bindparam("ids", expanding=True))
)

DEFAULT_SIZE = 100_000


class EventsOf:
    """Hold and booking ids -> their events: kept, else read (`max_size` 0 keeps none)."""

    def __init__(
        self,
        database: Database,
        max_size: int = DEFAULT_SIZE,
        on_hold: Callable[[Hold], None] | None = None,
    ) -> None:
        self._database = database
        self._known: OrderedDict[str, str] = OrderedDict()
        self.max_size = max_size
        self._on_hold = on_hold
        read_holds = (
            (lambda ids: self._read(_EVENTS_OF_HOLDS, ids)) if on_hold is None else self._read_holds
        )
        self._holds: Coalesced[str, str | None] = Coalesced(read_holds, name="events_of_holds")
        self._bookings: Coalesced[str, str | None] = Coalesced(
            lambda ids: self._read(_EVENTS_OF_BOOKINGS, ids), name="events_of_bookings"
        )

    def remember(self, ident: str, event_id: str) -> None:
        """Keep `ident`'s event (a canonical id and its event's)."""
        if self.max_size <= 0:
            return
        self._known[ident] = event_id
        if len(self._known) > self.max_size:
            self._known.popitem(last=False)

    async def resolve(self, command: Command) -> Command:
        """`command`, with the event of the hold or booking it names if it names one by id."""
        if isinstance(command, ConfirmHold | ReleaseHold):
            ident, reads = command.hold_id, self._holds
        elif isinstance(command, CancelBooking):
            ident, reads = command.booking_id, self._bookings
        else:
            return command
        canonical = cached_canonical_id(ident)
        if command.event_id is not None or canonical is None:
            return command  # an id that is no UUID names nothing: decided as not found
        event = self._known.get(canonical)
        if event is not None:
            self._known.move_to_end(canonical)
        else:
            event = await reads.get(canonical)
            if event is None:
                return command
            self.remember(canonical, event)
        return replace(command, event_id=event)

    async def _read(
        self, query: Select[tuple[object, object]], ids: Sequence[str]
    ) -> list[str | None]:
        """The event of each of `ids` (canonical), None for one that names nothing."""
        # One statement, on its own: no BEGIN and ROLLBACK round trips (a confirm's path).
        async with UnitOfWork(self._database, write=False, single_statement=True) as uow:
            rows = await uow.conn.execute(query, {"ids": in_list(as_uuid(i) for i in ids)})
            found = {str(row.id): str(row.event_id) for row in rows}
        return [found.get(ident) for ident in ids]

    async def _read_holds(self, ids: Sequence[str]) -> list[str | None]:
        """The event of each of `ids`; each hold found, items and all, to `on_hold`."""
        assert self._on_hold is not None
        async with UnitOfWork(self._database, write=False, single_statement=True) as uow:
            rows = await uow.conn.execute(
                _HOLDS_WITH_ITEMS, {"ids": in_list(as_uuid(i) for i in ids)}
            )
            read = [hold for hold, _ in holds_from_rows(rows)]
        for hold in read:
            self._on_hold(hold)
        found = {hold.id: hold.event_id for hold in read}
        return [found.get(ident) for ident in ids]
