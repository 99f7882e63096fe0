"""The write path: how commands become seats taken, held or freed, and rows stored.

- `load.py`: read what a batch touches, locked, as the domain's `Inventory`.
- `write.py`: write what the domain decided: one statement (PostgreSQL) or one per table.
- `transaction.py`: load, decide, write: the one transaction body every locked path runs.
- `locked.py`: run that transaction (SQLite's writer, or a PostgreSQL connection).
- `remembered.py`: PostgreSQL's one-round-trip batch, decided on remembered sections.
- `connections.py`: the committer's kept connections.
- `events_of.py`: the event of a hold or booking named by id alone, learnt before its batch.
- `narrowing.py`: a failing batch narrowed down to the command that fails it.
- `batched.py`: group commit; commands that queue up during a transaction share the next one.
- `committer_process.py`: PostgreSQL's group commit in one process shared by a server's workers.
- `direct.py`: one transaction per command.
- `sweeper.py`: gives back the seats of expired holds, and purges old idempotency keys.

The rules themselves live in `domain/decisions.py`. `BOOKING_STRATEGY` picks
the booker; both keep the same promise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, Protocol

from boxoffice.booking.batched import BatchedBooker
from boxoffice.booking.direct import DirectBooker
from boxoffice.db.database import Database
from boxoffice.domain.commands import Command
from boxoffice.domain.decisions import Result
from boxoffice.services.clock import Clock, system_clock
from boxoffice.services.idempotency import InFlight

Strategy = Literal["direct", "batched"]


class Booker(Protocol):
    """Applies one command all-or-nothing, whatever the strategy behind it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def ready(self) -> bool:
        """Commands submitted now will be applied (`/readyz` reports it)."""
        ...

    async def submit(self, command: Command) -> Result: ...


def make_booker(
    strategy: Strategy,
    database: Database,
    *,
    max_tickets_per_booking: int,
    max_batch_size: int = 64,
    clock: Clock = system_clock,
    in_flight: InFlight | None = None,
    queue_timeout_seconds: float = 1.0,
    on_written: Callable[[Iterable[str]], None] | None = None,
    committer_socket: str | None = None,
) -> Booker:
    """The booker `strategy` names; `on_written` is told the events each of its transactions
    wrote to, before the commands in it are answered. With `committer_socket` (set by
    `boxoffice serve` for its workers), the group commit runs in the shared committer
    process listening there."""
    if committer_socket:
        # Imported here: `python -m boxoffice.booking.committer_process` runs the module as
        # __main__, and must not find it imported already through this package.
        from boxoffice.booking.committer_process import RemoteBooker

        return RemoteBooker(
            committer_socket,
            max_tickets_per_booking=max_tickets_per_booking,
            on_written=on_written,
        )
    if strategy == "direct":
        return DirectBooker(
            database,
            max_tickets_per_booking=max_tickets_per_booking,
            clock=clock,
            in_flight=in_flight,
            on_written=on_written,
        )
    return BatchedBooker(
        database,
        max_tickets_per_booking=max_tickets_per_booking,
        max_batch_size=max_batch_size,
        clock=clock,
        in_flight=in_flight,
        queue_timeout_seconds=queue_timeout_seconds,
        on_written=on_written,
    )


__all__ = ["BatchedBooker", "Booker", "DirectBooker", "Strategy", "make_booker"]
