"""The sweeper: tidies up after expired holds and old idempotency keys, every few seconds.

Nothing depends on it. A hold past its expiry is expired for every reader
and every decision whether or not the sweeper has run (see
`domain/decisions.py`); the sweeper only gives the seats back in the rows
themselves, marks the holds expired and writes their audit records, so that
counts stay tidy when no one books the section for a while.

Each sweep is one `SweepExpired` command through the same transaction as every
other command (`booking/transaction.py`). It is safe with any number of
processes sweeping at once: on PostgreSQL it locks only sections no one else
holds (`SKIP LOCKED`), so it never waits behind a booking (whose batch gives
the expired seats back itself); on SQLite it takes its turn at the write lock.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import delete, select

from boxoffice.booking.locked import LockedWriter
from boxoffice.db.database import Database
from boxoffice.db.tables import hold_items, idempotency_keys
from boxoffice.domain.commands import SweepExpired, Swept
from boxoffice.observability import metrics
from boxoffice.periodic import Periodic
from boxoffice.services.clock import Clock
from boxoffice.services.unit_of_work import UnitOfWork

log = structlog.get_logger("boxoffice.sweeper")

SECTIONS_PER_SWEEP = 100


class Sweeper:
    """Sweeps every `interval_seconds` while started; `sweep()` runs one pass now."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock,
        interval_seconds: float,
        idempotency_ttl_hours: float,
    ) -> None:
        self._database = database
        self._clock = clock
        self._interval = interval_seconds
        self._key_ttl = timedelta(hours=idempotency_ttl_hours)
        self._writer = LockedWriter(database)
        self._loop = Periodic("boxoffice-sweeper", interval_seconds, self._pass)

    async def start(self) -> None:
        if self._interval > 0:
            self._loop.start()

    async def stop(self) -> None:
        """Let a sweep under way finish, then stop."""
        await self._loop.stop()

    async def _pass(self) -> None:
        try:
            await self.sweep()
        except Exception as error:  # an outage or a bug: the next pass tries again
            log.warning("sweep_failed", error=repr(error))

    async def sweep(self) -> int:
        """One pass: the seats given back (in up to SECTIONS_PER_SWEEP sections)."""
        now = self._clock()
        # Read outside the write transaction, which names each section with its event.
        async with UnitOfWork(self._database, write=False) as uow:
            found = await uow.conn.execute(
                select(hold_items.c.event_id, hold_items.c.section_id)
                .where(hold_items.c.active, hold_items.c.expires_at <= now)
                .distinct()
                .limit(SECTIONS_PER_SWEEP)
            )
            section_ids = sorted((str(event), str(ident)) for event, ident in found)
        freed = 0
        if section_ids:
            applied = await self._writer.apply([SweepExpired(tuple(section_ids))], now)
            metrics.count_changes(applied.changes)
            outcome = applied.outcomes[0]
            if isinstance(outcome, Swept):
                freed = outcome.seats
            if freed:
                log.info("expired_holds_swept", seats=freed, sections=len(section_ids))
        # Old keys of every caller at once: the one statement here that names no event or
        # scope (on a distributed database, one DELETE on every shard, off the booking path).
        async with UnitOfWork(self._database, write=True) as uow:
            await uow.conn.execute(
                delete(idempotency_keys).where(idempotency_keys.c.created_at < now - self._key_ttl)
            )
            await uow.commit()
        return freed
