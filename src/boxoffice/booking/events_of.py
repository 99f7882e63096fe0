"""The event of a hold or a booking named by id alone, learnt before its transaction.

Confirm, release and cancel name only a hold or a booking (`POST
/holds/{id}/confirm`, `DELETE /holds/{id}`, `POST /bookings/{id}/cancel`).
Every statement of their write transaction names the event as well
(docs/scaling.md: on a database distributed by event that keeps the
transaction on one shard), so the booker asks first: one read by id, on the
read pool, outside any write transaction.

A hold's or a booking's event never changes, so each answer is kept, bounded
(least recently used dropped first), and so is the event of every hold this
process places: a checkout confirmed by the process that placed its hold reads
nothing more. An id that names nothing is not kept; its command goes to its
batch without an event, where it is not found (404, stored with its
idempotency key like any other answer), as before.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from sqlalchemy import bindparam, select

from boxoffice.booking.load import as_uuid
from boxoffice.db.database import Database
from boxoffice.db.tables import bookings, holds
from boxoffice.domain.commands import CancelBooking, Command, ConfirmHold, ReleaseHold
from boxoffice.domain.ids import cached_canonical_id
from boxoffice.services.unit_of_work import UnitOfWork

_EVENT_OF_HOLD = select(holds.c.event_id).where(holds.c.id == bindparam("id"))
_EVENT_OF_BOOKING = select(bookings.c.event_id).where(bookings.c.id == bindparam("id"))

DEFAULT_SIZE = 100_000


class EventsOf:
    """Hold and booking ids -> their events: kept, else read (`max_size` 0 keeps none)."""

    def __init__(self, database: Database, max_size: int = DEFAULT_SIZE) -> None:
        self._database = database
        self._known: OrderedDict[str, str] = OrderedDict()
        self.max_size = max_size
        self.reads = 0  # lookups that went to the database

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
            ident, query = command.hold_id, _EVENT_OF_HOLD
        elif isinstance(command, CancelBooking):
            ident, query = command.booking_id, _EVENT_OF_BOOKING
        else:
            return command
        canonical = cached_canonical_id(ident)
        if command.event_id is not None or canonical is None:
            return command  # an id that is no UUID names nothing: decided as not found
        event = self._known.get(canonical)
        if event is not None:
            self._known.move_to_end(canonical)
        else:
            self.reads += 1
            async with UnitOfWork(self._database, write=False) as uow:
                found = (await uow.conn.execute(query, {"id": as_uuid(canonical)})).scalar()
            if found is None:
                return command
            event = str(found)
            self.remember(canonical, event)
        return replace(command, event_id=event)
