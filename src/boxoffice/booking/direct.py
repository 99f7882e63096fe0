"""One transaction per command: the simplest correct path, and the baseline of the benchmark."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from boxoffice.booking.events_of import EventsOf
from boxoffice.booking.locked import LockedWriter
from boxoffice.db.database import Database
from boxoffice.domain.commands import Book, Command, PlaceHold, events_named
from boxoffice.domain.decisions import Result
from boxoffice.domain.errors import BoxofficeError
from boxoffice.domain.model import Hold
from boxoffice.observability import metrics
from boxoffice.services.clock import Clock, system_clock
from boxoffice.services.idempotency import InFlight


class DirectBooker:
    """Applies each command in its own transaction, committed before the answer is sent."""

    def __init__(
        self,
        database: Database,
        *,
        max_tickets_per_booking: int,
        clock: Clock = system_clock,
        in_flight: InFlight | None = None,
        on_written: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self._database = database
        self._on_written = on_written  # told the command's event before it is answered
        self._max_tickets = max_tickets_per_booking
        self._clock = clock
        self._writer = LockedWriter(database)
        self._keys = InFlight() if in_flight is None else in_flight
        self.events_of = EventsOf(database)

    async def start(self) -> None:
        await self._database.start_writer()

    async def stop(self) -> None:
        """Nothing to stop: each command ran its own transaction."""

    @property
    def ready(self) -> bool:
        """Always: there is no task of its own to die."""
        return True

    async def submit(self, command: Command) -> Result:
        """Apply `command` atomically and return its result, or raise and change nothing."""
        if isinstance(command, Book | PlaceHold):
            command.check_quantity(self._max_tickets)
        else:
            command = await self.events_of.resolve(command)  # see events_of.py
        with self._keys.claimed(command.idempotency):
            applied = await self._writer.apply([command], self._clock())
        if self._on_written is not None:
            self._on_written(events_named((command,)))
        metrics.count_changes(applied.changes)
        outcome = applied.outcomes[0]
        if isinstance(outcome, BoxofficeError):
            raise outcome
        if isinstance(outcome, Hold):
            self.events_of.remember(outcome.id, outcome.event_id)
        return outcome
