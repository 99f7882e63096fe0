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
  nothing was half-written.
- A request already committed is never retried: on PostgreSQL's one-statement
  path, requests whose section was verified are final once the statement
  returns, and a failure of the locked retry reaches only the retried requests.
- A request whose caller went away (client disconnect cancels the handler)
  before its batch started is skipped. Once its batch has started it is
  committed like the rest, exactly as on the direct path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.booking.batch import Outcome, Target, reserve_batch, target_ids
from boxoffice.booking.remembered import RememberedSections, book_if_unchanged
from boxoffice.db.database import Database
from boxoffice.db.errors import DatabaseUnavailable, is_unavailable
from boxoffice.domain.model import Booking, BookingRequest, Section
from boxoffice.services.unit_of_work import UnitOfWork, write_in_one_hop

log = structlog.get_logger("boxoffice.booking")

KEEP_CONNECTION_IDLE_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 10.0

# One request's final answer: its booking, the domain error that refused it,
# or the failure that kept it from being written.
Answer = Outcome | Exception


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
        self, database: Database, *, max_tickets_per_booking: int, max_batch_size: int = 64
    ) -> None:
        self._database = database
        self._max_tickets = max_tickets_per_booking
        self._max_batch = max_batch_size
        self._queue: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_flight: list[_Waiting] = []
        self._remembered = RememberedSections() if database.dialect == "postgresql" else None
        # The committer's own connections, kept across batches; dropped after any failure.
        self._in_transaction: AsyncConnection | None = None
        self._autocommit: AsyncConnection | None = None
        self._last_batch = 0.0
        self.stats = BatchStats()

    async def start(self) -> None:
        if self._committer is None:
            await self._database.start_writer()
            self._stopping = False
            self._committer = asyncio.create_task(self._run(), name="boxoffice-committer")
            self._committer.add_done_callback(self._on_committer_exit)

    async def stop(self) -> None:
        """Finish the batch in flight and whatever is queued, then stop.

        Past STOP_TIMEOUT_SECONDS the committer is cancelled; the requests it
        still held are answered 503, and the batch in flight is rolled back
        (on SQLite's writer too). Only a cancellation that lands while
        the COMMIT itself is under way can leave it applied; the database never
        half-applies it.
        """
        log.info(
            "group_commit_stats",
            batches=self.stats.batches,
            requests=self.stats.requests,
            largest=self.stats.largest,
            verified=self.stats.verified,
            retried=self.stats.retried,
        )
        committer, self._committer = self._committer, None
        if committer is not None:
            self._stopping = True
            self._arrived.set()
            try:
                await asyncio.wait_for(asyncio.shield(committer), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await committer
            except Exception:  # it died earlier; _on_committer_exit logged why
                pass
        self._fail_waiting(DatabaseUnavailable("the server is shutting down"))
        await self._drop_connections()

    async def book(self, request: BookingRequest) -> Booking:
        """Take the seats and store the booking atomically, or raise and change nothing."""
        request.check_quantity(self._max_tickets)
        if self._committer is None:
            raise RuntimeError("BatchedBooker.start() was not called")
        if self._committer.done():
            raise DatabaseUnavailable("the booking committer has stopped")
        answer: asyncio.Future[Booking] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(request, answer))
        self._arrived.set()
        # If our caller is cancelled, so is `answer`, and the committer skips it.
        return await answer

    async def _run(self) -> None:
        while self._queue or not self._stopping:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = self._next_batch()
            if batch:
                self._in_flight = batch  # answered by _fail_waiting if we die meanwhile
                await self._commit(batch)
                self._in_flight = []

    def _on_committer_exit(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("committer_died", exc_info=task.exception())
        self._fail_waiting(DatabaseUnavailable("the booking committer has stopped"))

    def _fail_waiting(self, error: Exception) -> None:
        for waiting in [*self._in_flight, *self._queue]:
            _settle(waiting, error)
        self._in_flight = []
        self._queue.clear()

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
        answers = await self._answers([w.request for w in batch])
        for waiting, answer in zip(batch, answers, strict=True):
            _settle(waiting, answer)

    async def _answers(
        self, requests: list[BookingRequest], *, under_lock: bool = False
    ) -> list[Answer]:
        """One final answer per request; never raises.

        When the transaction fails before committing anything, an unavailable
        database answers every request with 503; any other failure is narrowed
        down by retrying each request alone, so only the faulty one fails.
        """
        try:
            return list(await self._transaction(requests, under_lock=under_lock))
        except DatabaseUnavailable as error:
            return [error] * len(requests)
        except Exception as error:
            if len(requests) == 1:
                return [error]
            log.warning("batch_failed_retrying_one_by_one", size=len(requests), error=repr(error))
            answers: list[Answer] = []
            for request in requests:
                answers.extend(await self._answers([request], under_lock=under_lock))
            return answers

    async def _transaction(
        self, requests: list[BookingRequest], *, under_lock: bool
    ) -> list[Answer]:
        """Book `requests`; raise only when nothing of them was committed."""
        try:
            return await self._book(requests, under_lock=under_lock)
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
        for kept in (self._in_transaction, self._autocommit):
            if kept is not None and (kept.closed or kept.invalidated):
                await self._drop_connections()
                break
        try:
            if autocommit:
                if self._autocommit is None:
                    conn = await self._database.connect(write=True)
                    try:
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                    except BaseException:
                        await conn.close()
                        raise
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

    async def _book(self, requests: list[BookingRequest], *, under_lock: bool) -> list[Answer]:
        now = datetime.now(UTC)
        if self._remembered is not None and not under_lock:
            targets = target_ids(requests)
            copies = self._remembered.copies(targets)
            if copies is not None:
                return await self._book_if_unchanged(requests, targets, copies, now)
        return list(await self._book_under_lock(requests, now))

    async def _book_under_lock(
        self, requests: Sequence[BookingRequest], now: datetime
    ) -> list[Outcome]:
        if self._database.dialect == "sqlite":
            # Embedded database: the whole transaction in one hop to the writer.
            outcomes, _ = await write_in_one_hop(self._database, reserve_batch, list(requests), now)
            return outcomes
        conn = await self._connection(autocommit=False)
        async with UnitOfWork(self._database, write=True, connection=conn) as uow:
            outcomes, sections = await uow.conn.run_sync(reserve_batch, requests, now)
            await uow.commit()
        if self._remembered is not None:
            self._remembered.remember(sections)
        return outcomes

    async def _book_if_unchanged(
        self,
        requests: list[BookingRequest],
        targets: list[Target],
        copies: dict[str, Section],
        now: datetime,
    ) -> list[Answer]:
        assert self._remembered is not None
        conn = await self._connection(autocommit=True)
        async with UnitOfWork(
            self._database, write=True, single_statement=True, connection=conn
        ) as uow:
            verified = await book_if_unchanged(uow.conn, requests, targets, copies, now)
            await uow.commit()
        # From here on the verified requests are committed: nothing below may raise
        # for them, and only the unverified ones are tried again.
        self._remembered.remember(verified.sections)
        self._remembered.forget(verified.stale)
        self.stats.verified += len(verified.outcomes)
        answers: dict[int, Answer] = dict(verified.outcomes)
        if verified.retry:
            self.stats.retried += len(verified.retry)
            retried = await self._answers([requests[i] for i in verified.retry], under_lock=True)
            answers.update(zip(verified.retry, retried, strict=True))
        return [answers[index] for index in range(len(requests))]


def _settle(waiting: _Waiting, outcome: Booking | BaseException) -> None:
    if waiting.answer.done():
        return
    if isinstance(outcome, BaseException):
        waiting.answer.set_exception(outcome)
    else:
        waiting.answer.set_result(outcome)
