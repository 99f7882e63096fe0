"""One transaction per booking request: the simplest correct path."""

from __future__ import annotations

from datetime import UTC, datetime

from boxoffice.booking.reserve import reserve_seats
from boxoffice.db.database import Database
from boxoffice.domain.model import Booking, BookingRequest
from boxoffice.services.unit_of_work import UnitOfWork


class DirectBooker:
    """Books each request in its own transaction, committed before the answer is sent."""

    def __init__(self, database: Database, *, max_tickets_per_booking: int) -> None:
        self._database = database
        self._max_tickets = max_tickets_per_booking

    async def start(self) -> None:
        """Nothing to start: each request runs its own transaction."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def book(self, request: BookingRequest) -> Booking:
        """Take the seats and store the booking atomically, or raise and change nothing."""
        request.check_quantity(self._max_tickets)
        async with UnitOfWork(self._database, write=True) as uow:
            booking = await reserve_seats(uow.conn, request, datetime.now(UTC))
            await uow.commit()
        return booking
