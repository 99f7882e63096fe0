"""Joins that arrive together are written together: one transaction for a burst.

At the opening of a sale thousands join the line within seconds. One
transaction per join costs SQLite its write lock each time (and PostgreSQL a
commit each time); instead, joins queue here while the previous batch is
being written, and the next transaction takes them all (up to `max_batch`),
as the booking path's group commit does for purchases. A join waits at most
one batch longer than it would alone.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from boxoffice.db.database import Database
from boxoffice.observability import metrics
from boxoffice.services import waiting_room as rooms
from boxoffice.services.waiting_room import Joining

__all__ = ["LineJoiner"]

MAX_BATCH = 500


class LineJoiner:
    """Writes queued joins in batches, one batch at a time."""

    def __init__(self, database: Database, *, max_batch: int = MAX_BATCH) -> None:
        self._database = database
        self._max_batch = max_batch
        self._queue: list[tuple[Joining, asyncio.Future[tuple[int, datetime]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def join(self, joining: Joining) -> tuple[int, datetime]:
        """The customer's place (order key, joined at), once its batch is committed."""
        future: asyncio.Future[tuple[int, datetime]] = asyncio.get_running_loop().create_future()
        self._queue.append((joining, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                started = time.perf_counter()
                try:
                    places = await rooms.join(self._database, [joining for joining, _ in batch])
                    metrics.QUEUE_JOIN_WRITES.observe(time.perf_counter() - started)
                except Exception as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), place in zip(batch, places, strict=True):
                    if not future.done():
                        future.set_result(place)
        finally:
            self._writer = None
            if self._queue:  # cancelled mid-way: whoever waits must not wait forever
                for _, future in self._queue:
                    if not future.done():
                        future.cancel()
                self._queue.clear()

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
