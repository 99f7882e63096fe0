"""Group commit: booking requests that arrive while a transaction is in flight share the next one.

    request ─┐
    request ─┼─> queue ─> committer task ─> one transaction per batch ─> each future resolved
    request ─┘

- Nothing waits on a timer. A lone request finds the committer idle and is
  committed at once; batches form only from requests that queued up while the
  previous transaction was running, so batching grows exactly with load.
- Arrival order is kept within the process: the queue is FIFO and
  `reserve_batch` decides in queue order. Between processes the database
  arbitrates (row locks on PostgreSQL, the write lock on SQLite).
- Every request gets its own all-or-nothing answer. If the batch transaction
  fails on an integrity error, it is rolled back and its requests are retried
  one per transaction, so only the faulty request fails. If the database is
  unavailable, every request of the batch gets `DatabaseUnavailable` and
  nothing was written.
- A request whose caller went away (client disconnect cancels the handler)
  before its batch started is skipped. Once its batch has started it is
  committed like the rest, exactly as on the direct path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.booking.batch import Outcome, Target, reserve_batch, target_ids
from boxoffice.booking.remembered import RememberedSections, book_if_unchanged
from boxoffice.booking.reserve import reserve_seats
from boxoffice.db.database import Database
from boxoffice.db.errors import DatabaseUnavailable, is_unavailable
from boxoffice.domain.errors import BoxofficeError
from boxoffice.domain.model import Booking, BookingRequest, Section
from boxoffice.services.unit_of_work import UnitOfWork

log = structlog.get_logger("boxoffice.booking")

KEEP_CONNECTION_IDLE_SECONDS = 1.0


@dataclass(slots=True)
class _Waiting:
    request: BookingRequest
    answer: asyncio.Future[Booking]


@dataclass(slots=True)
class BatchStats:
    """How much combining happened; for tests and metrics."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    verified: int = 0  # requests settled by the one-statement path (PostgreSQL)
    retried: int = 0  # requests retried under lock because their section had changed


class BatchedBooker:
    """Books requests through one committer task that combines whatever has queued up."""

    def __init__(
        self, database: Database, *, max_tickets_per_booking: int, max_batch_size: int = 256
    ) -> None:
        self._database = database
        self._max_tickets = max_tickets_per_booking
        self._max_batch = max_batch_size
        self._queue: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._remembered = RememberedSections() if database.dialect == "postgresql" else None
        # The committer's own connections, kept across batches; dropped after any failure.
        self._in_transaction: AsyncConnection | None = None
        self._autocommit: AsyncConnection | None = None
        self._last_batch = 0.0
        self.stats = BatchStats()

    async def start(self) -> None:
        if self._committer is None:
            self._committer = asyncio.create_task(self._run(), name="boxoffice-committer")

    async def stop(self) -> None:
        """Stop the committer; requests still queued are answered 503, never half-done."""
        log.info(
            "group_commit_stats",
            batches=self.stats.batches,
            requests=self.stats.requests,
            largest=self.stats.largest,
            verified=self.stats.verified,
            retried=self.stats.retried,
        )
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
            self._committer = None
        while self._queue:
            waiting = self._queue.popleft()
            if not waiting.answer.done():
                waiting.answer.set_exception(DatabaseUnavailable("the server is shutting down"))
        await self._drop_connections()

    async def book(self, request: BookingRequest) -> Booking:
        """Take the seats and store the booking atomically, or raise and change nothing."""
        request.check_quantity(self._max_tickets)
        if self._committer is None:
            raise RuntimeError("BatchedBooker.start() was not called")
        answer: asyncio.Future[Booking] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(request, answer))
        self._arrived.set()
        # If our caller is cancelled, so is `answer`, and the committer skips it.
        return await answer

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._queue:
                batch = self._next_batch()
                if batch:
                    await self._commit(batch)

    def _next_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        while self._queue and len(batch) < self._max_batch:
            waiting = self._queue.popleft()
            if not waiting.answer.done():  # skip callers that went away
                batch.append(waiting)
        return batch

    async def _commit(self, batch: list[_Waiting]) -> None:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        try:
            outcomes = await self._transaction([w.request for w in batch])
        except DatabaseUnavailable as error:
            for waiting in batch:
                _settle(waiting, error)
            return
        except Exception as error:  # integrity or other: isolate the faulty request
            log.warning("batch_failed_retrying_one_by_one", size=len(batch), error=repr(error))
            for waiting in batch:
                await self._commit_alone(waiting)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            _settle(waiting, outcome)

    async def _transaction(self, requests: list[BookingRequest]) -> list[Outcome]:
        """Book `requests` and commit; one outcome each, or raise and write nothing."""
        try:
            return await self._book(requests)
        except BaseException:
            await self._drop_connections()  # it may be broken; the next batch takes a new one
            raise

    async def _connection(self, *, autocommit: bool) -> AsyncConnection:
        """The committer's kept connection of that kind, opened on first use.

        Under load the kept connection skips the pool's liveness ping. After a
        quiet second it is swapped for a pooled one, which the pool pings, so a
        database restart during a lull costs no failed request.
        """
        now = time.monotonic()
        if now - self._last_batch > KEEP_CONNECTION_IDLE_SECONDS:
            await self._drop_connections(invalidate=False)
        self._last_batch = now
        try:
            if autocommit:
                if self._autocommit is None:
                    conn = await self._database.connect(write=True)
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    self._autocommit = conn
                return self._autocommit
            if self._in_transaction is None:
                self._in_transaction = await self._database.connect(write=True)
            return self._in_transaction
        except Exception as error:
            if is_unavailable(error):
                raise DatabaseUnavailable(str(error)) from error
            raise

    async def _drop_connections(self, *, invalidate: bool = True) -> None:
        for conn in (self._in_transaction, self._autocommit):
            if conn is not None:
                if invalidate:
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
                with contextlib.suppress(Exception):
                    await conn.close()
        self._in_transaction = self._autocommit = None

    async def _book(self, requests: list[BookingRequest]) -> list[Outcome]:
        now = datetime.now(UTC)
        if self._remembered is not None:
            targets = target_ids(requests)
            copies = self._remembered.copies(targets)
            if copies is not None:
                return await self._book_if_unchanged(requests, targets, copies, now)
        elif len(requests) == 1:
            # A lone request on SQLite: the single conditional UPDATE is the shortest path.
            conn = await self._connection(autocommit=False)
            async with UnitOfWork(self._database, write=True, connection=conn) as uow:
                try:
                    booking = await reserve_seats(uow.conn, requests[0], now)
                except BoxofficeError as refused:
                    return [refused]
                await uow.commit()
            return [booking]
        return await self._book_under_lock(requests, now)

    async def _book_under_lock(
        self, requests: Sequence[BookingRequest], now: datetime
    ) -> list[Outcome]:
        conn = await self._connection(autocommit=False)
        async with UnitOfWork(self._database, write=True, connection=conn) as uow:
            outcomes, sections = await reserve_batch(uow.conn, requests, now)
            await uow.commit()
        if self._remembered is not None:
            self._remembered.remember(list(sections.values()))
        return outcomes

    async def _book_if_unchanged(
        self,
        requests: list[BookingRequest],
        targets: list[Target],
        copies: dict[uuid.UUID, Section],
        now: datetime,
    ) -> list[Outcome]:
        assert self._remembered is not None
        conn = await self._connection(autocommit=True)
        async with UnitOfWork(
            self._database, write=True, single_statement=True, connection=conn
        ) as uow:
            verified = await book_if_unchanged(uow.conn, requests, targets, copies, now)
            await uow.commit()
        self._remembered.remember(verified.sections)
        self.stats.verified += len(verified.outcomes)
        outcomes: dict[int, Outcome] = dict(verified.outcomes)
        if verified.retry:
            self.stats.retried += len(verified.retry)
            stale = [section for _, section in (targets[i] for i in verified.retry) if section]
            self._remembered.forget(stale)
            retried = await self._book_under_lock([requests[i] for i in verified.retry], now)
            outcomes.update(zip(verified.retry, retried, strict=True))
        return [outcomes[index] for index in range(len(requests))]

    async def _commit_alone(self, waiting: _Waiting) -> None:
        if waiting.answer.done():
            return
        try:
            outcome = (await self._transaction([waiting.request]))[0]
        except Exception as error:
            _settle(waiting, error)
            return
        _settle(waiting, outcome)


def _settle(waiting: _Waiting, outcome: Booking | BaseException) -> None:
    if waiting.answer.done():
        return
    if isinstance(outcome, BaseException):
        waiting.answer.set_exception(outcome)
    else:
        waiting.answer.set_result(outcome)
