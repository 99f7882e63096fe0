"""The hot path: how a booking request becomes seats taken and a booking stored.

- `reserve.py`: one request's statements (a single conditional UPDATE, then the INSERT).
- `batch.py`: many requests' statements, decided first come first served.
- `direct.py`: one transaction per request.
- `batched.py`: group commit; requests that queue up during a transaction share the next one.
- `remembered.py`: PostgreSQL's one-statement batch: decide from remembered seat counts,
  compare-and-set while writing.

`BOOKING_STRATEGY` picks the booker; both keep the same promise.
"""

from __future__ import annotations

from typing import Literal, Protocol

from boxoffice.booking.batched import BatchedBooker
from boxoffice.booking.direct import DirectBooker
from boxoffice.db.database import Database
from boxoffice.domain.model import Booking, BookingRequest

Strategy = Literal["direct", "batched"]


class Booker(Protocol):
    """Books one request all-or-nothing, whatever the strategy behind it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def book(self, request: BookingRequest) -> Booking: ...


def make_booker(
    strategy: Strategy,
    database: Database,
    *,
    max_tickets_per_booking: int,
    max_batch_size: int = 64,
) -> Booker:
    if strategy == "direct":
        return DirectBooker(database, max_tickets_per_booking=max_tickets_per_booking)
    return BatchedBooker(
        database, max_tickets_per_booking=max_tickets_per_booking, max_batch_size=max_batch_size
    )


__all__ = ["BatchedBooker", "Booker", "DirectBooker", "Strategy", "make_booker"]
