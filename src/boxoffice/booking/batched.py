"""Group commit: commands that arrive while a transaction is in flight share the next one.

    command ─┐
    command ─┼─> queue ─> committer task ─> one transaction per batch ─> each future resolved
    command ─┘

- Nothing waits on a timer. A lone command finds the committer idle and is
  committed at once; batches form only from commands that queued up while the
  previous transaction was running, so batching grows exactly with load.
- Any mix of commands shares a batch (bookings, holds, confirmations,
  releases, cancellations), decided in queue order (`domain/decisions.py`).
  Between processes the database arbitrates (row locks on PostgreSQL, the
  write lock on SQLite).
- A batch is written in one round trip when PostgreSQL's remembered sections
  allow it (`remembered.py`), otherwise in a transaction holding its rows'
  locks (`locked.py`). Either way every command gets its own all-or-nothing
  answer; a failing batch is narrowed down to the command that fails it
  (`narrowing.py`).
- A command whose caller went away (client disconnect cancels the handler)
  before its batch started is skipped. Once its batch has started it is
  committed like the rest, exactly as on the direct path.
- The queue is bounded in time, not length: a command not taken into a batch
  within `queue_timeout_seconds` (BOOKING_QUEUE_TIMEOUT_MS) is answered
  `Overloaded` (503 `overloaded`) and dropped, so nothing of it is written;
  one already in a batch is always waited for. One timer watches the oldest
  command (the queue is in arrival order), not one per command: a timer per
  booking cost 3.8 % of a booking's instructions (docs/performance.md).
- Confirm, release and cancel learn the event of the hold or booking they name
  before they queue (`events_of.py`): every statement of the batch names it.
  On PostgreSQL that read brings a hold placed by another process whole, so its
  confirmation is decided from memory too (`remembered.py`).
- Once a batch is over, and before any of its commands is answered,
  `on_written` is told the events it wrote to (once per batch): the process's
  cached availability of those events is dropped (`services/availability.py`).
- If the committer task dies (a bug, not a database failure: those fail one
  batch), whatever it held is answered 503, and it is started again after
  `restart_delay_seconds`, doubling while it keeps dying. `ready` is False
  meanwhile, and `/readyz` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from boxoffice.booking.connections import KeptConnections
from boxoffice.booking.events_of import EventsOf
from boxoffice.booking.locked import LockedWriter
from boxoffice.booking.narrowing import Answer, answer_each
from boxoffice.booking.remembered import Remembered, apply_if_unchanged
from boxoffice.db.database import Database
from boxoffice.db.errors import DatabaseUnavailable, Overloaded
from boxoffice.domain.commands import (
    Book,
    Command,
    ConfirmHold,
    PlaceHold,
    ReleaseHold,
    events_named,
)
from boxoffice.domain.decisions import Changes, Decisions, Outcome, Result
from boxoffice.domain.model import Hold
from boxoffice.observability import metrics
from boxoffice.services.clock import Clock, system_clock
from boxoffice.services.idempotency import InFlight
from boxoffice.services.unit_of_work import UnitOfWork

log = structlog.get_logger("boxoffice.booking")

STOP_TIMEOUT_SECONDS = 10.0
MAX_RESTART_DELAY_SECONDS = 30.0
_MEMORY, _LOCKED = ("memory",), ("locked",)  # boxoffice_batch_write_seconds{path}


@dataclass(slots=True)
class _Waiting:
    command: Command
    answer: asyncio.Future[Result]
    deadline: float  # loop time by which a batch must take it (BOOKING_QUEUE_TIMEOUT_MS)
    queued_at: float  # loop time it was queued


def _give_up(waiting: _Waiting, now: float) -> None:
    """The queue timeout: answer a command that no batch has taken, and now none will."""
    if not waiting.answer.done():
        metrics.BOOKING_QUEUE_TIMEOUTS.inc()
        metrics.QUEUE_WAIT_SECONDS.observe(now - waiting.queued_at)
        waiting.answer.set_exception(
            Overloaded("the booking queue did not reach this request in time")
        )


@dataclass(slots=True)
class BatchStats:
    """How much combining happened; for tests and metrics."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    verified: int = 0  # commands settled by the one-statement path (PostgreSQL)
    retried: int = 0  # commands sent there, found stale, and retried under lock


class BatchedBooker:
    """Applies commands through one committer task that combines whatever has queued up."""

    def __init__(
        self,
        database: Database,
        *,
        max_tickets_per_booking: int,
        max_batch_size: int = 64,
        clock: Clock = system_clock,
        in_flight: InFlight | None = None,
        queue_timeout_seconds: float = 1.0,
        restart_delay_seconds: float = 1.0,
        on_written: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self._database = database
        self._on_written = on_written
        self._max_tickets = max_tickets_per_booking
        self._max_batch = max_batch_size
        self._queue_timeout = queue_timeout_seconds  # 0: wait however long it takes
        self._first_restart_delay = restart_delay_seconds
        self._restart_delay = restart_delay_seconds
        self._restart: asyncio.TimerHandle | None = None
        self._reaper: asyncio.TimerHandle | None = None  # armed for the oldest deadline
        self._clock = clock
        self._queue: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._stopping = False  # stop() was called: answer 503, and do not restart
        self._in_flight: list[_Waiting] = []
        self._keys = InFlight() if in_flight is None else in_flight
        postgresql = database.dialect == "postgresql"
        self._connections = KeptConnections(database) if postgresql else None
        self._locked = LockedWriter(database, self._connections)
        self._remembered = Remembered() if postgresql else None
        self.events_of = EventsOf(
            database,
            on_hold=None if self._remembered is None else self._remembered.remember_read_hold,
        )
        self.stats = BatchStats()

    async def start(self) -> None:
        if self._committer is None:
            await self._database.start_writer()
            self._stopping = False
            self._start_committer()

    def _start_committer(self) -> None:
        self._restart = None
        self._committer = asyncio.create_task(self._run(), name="boxoffice-committer")
        self._committer.add_done_callback(self._on_committer_exit)

    @property
    def ready(self) -> bool:
        """The committer is running: commands submitted now will be committed."""
        return self._committer is not None and not self._committer.done()

    async def stop(self) -> None:
        """Finish the batch in flight and whatever is queued, then stop.

        Past STOP_TIMEOUT_SECONDS the committer is cancelled; the commands it
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
        self._stopping = True
        for timer in (self._restart, self._reaper):
            if timer is not None:
                timer.cancel()
        self._restart = self._reaper = None
        if committer is not None:
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
        if self._connections is not None:
            await self._connections.drop()

    async def submit(self, command: Command) -> Result:
        """Apply `command` atomically and return its result, or raise and change nothing."""
        if isinstance(command, Book | PlaceHold):
            command.check_quantity(self._max_tickets)
        if self._committer is None or self._committer.done():
            if self._committer is None and not self._stopping:
                raise RuntimeError("BatchedBooker.start() was not called")
            raise DatabaseUnavailable("the booking committer is not running")
        if not isinstance(command, Book | PlaceHold):  # the event first (events_of.py)
            command = await self.events_of.resolve(command)
        key = command.idempotency
        if key is None:  # the common case, without a context manager's cost
            result = await self._queued(command)
        else:
            self._keys.claim(key)
            try:
                result = await self._queued(command)
            finally:
                self._keys.release(key)
        if type(result) is Hold:
            self.events_of.remember(result.id, result.event_id)
        return result

    async def _queued(self, command: Command) -> Result:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Result] = loop.create_future()
        timeout = self._queue_timeout
        now = loop.time()
        waiting = _Waiting(command, answer, now + timeout if timeout else math.inf, now)
        self._queue.append(waiting)
        self._arrived.set()
        if timeout and self._reaper is None:
            self._reaper = loop.call_at(waiting.deadline, self._reap)
        # If our caller is cancelled, so is `answer`, and the committer skips it.
        return await answer

    def _reap(self) -> None:
        """Answer the commands whose time in the queue is up; watch the next oldest."""
        self._reaper = None
        now = asyncio.get_running_loop().time()
        queue = self._queue
        while queue and queue[0].deadline <= now:
            _give_up(queue.popleft(), now)
        if queue and math.isfinite(queue[0].deadline):
            self._reaper = asyncio.get_running_loop().call_at(queue[0].deadline, self._reap)

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
                self._restart_delay = self._first_restart_delay

    def _on_committer_exit(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._fail_waiting(DatabaseUnavailable("the booking committer has stopped"))
        if self._stopping or task is not self._committer:
            log.error("committer_died", exc_info=task.exception())
            return
        delay, self._restart_delay = (
            self._restart_delay,
            min(self._restart_delay * 2, MAX_RESTART_DELAY_SECONDS),
        )
        log.error("committer_died", restart_in_seconds=delay, exc_info=task.exception())
        metrics.COMMITTER_RESTARTS.inc()
        self._restart = asyncio.get_running_loop().call_later(delay, self._start_committer)

    def _fail_waiting(self, error: Exception) -> None:
        for waiting in [*self._in_flight, *self._queue]:
            _settle(waiting, error)
        self._in_flight = []
        self._queue.clear()

    def _next_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        while self._queue and len(batch) < self._max_batch:
            waiting = self._queue.popleft()
            if not waiting.answer.done():  # skip callers that went away or gave up
                batch.append(waiting)
        return batch

    async def _commit(self, batch: list[_Waiting]) -> None:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        started = time.perf_counter()
        taken = asyncio.get_running_loop().time()
        for waiting in batch:
            metrics.QUEUE_WAIT_SECONDS.observe(taken - waiting.queued_at)
        answers = await answer_each(self._apply, [w.command for w in batch])
        if self._on_written is not None:
            self._on_written(events_named(w.command for w in batch))
        for waiting, answer in zip(batch, answers, strict=True):
            _settle(waiting, answer)
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_COMMANDS.observe(len(batch))

    async def _apply(self, commands: Sequence[Command]) -> list[Outcome]:
        """Commit `commands`; raise only when nothing of them was committed."""
        now = self._clock()
        try:
            if self._remembered is not None:
                started = time.perf_counter()
                decided = await self._apply_if_unchanged(commands, now)
                if decided is not None:
                    metrics.BATCH_WRITES.observe(time.perf_counter() - started, _MEMORY)
                    metrics.count_changes(Changes.of(decided.effects))
                    return decided.outcomes
            started = time.perf_counter()
            applied = await self._locked.apply(commands, now)
            if self._remembered is not None:
                metrics.BATCH_WRITES.observe(time.perf_counter() - started, _LOCKED)
        except BaseException:
            if self._connections is not None:  # it may be broken: the next batch opens anew
                await self._connections.drop()
            if self._remembered is not None:
                # Committed or not is unknown (a connection lost during COMMIT): a hold
                # remembered active may be settled, while its sections are read afresh.
                self._remembered.forget_holds(
                    c.hold_id for c in commands if isinstance(c, ConfirmHold | ReleaseHold)
                )
            raise
        metrics.count_changes(applied.changes)
        if self._remembered is not None:
            self._remembered.remember(applied.sections)
            self._remembered.remember_holds(applied.new_holds, applied.changed_holds)
            # Settled by another process, or found expired: not worth a try from memory.
            self._remembered.forget_holds(
                c.hold_id for c in commands if isinstance(c, ConfirmHold | ReleaseHold)
            )
        return applied.outcomes

    async def _apply_if_unchanged(
        self, commands: Sequence[Command], now: datetime
    ) -> Decisions | None:
        assert self._remembered is not None
        assert self._connections is not None
        inventory = self._remembered.inventory_for(commands, now)
        if inventory is None:
            return None
        conn = await self._connections.get(autocommit=True)
        async with UnitOfWork(
            self._database, write=True, single_statement=True, connection=conn
        ) as uow:
            decided = await apply_if_unchanged(uow.conn, commands, inventory, self._remembered, now)
            await uow.commit()
        if decided is None:
            self.stats.retried += len(commands)
        else:
            self.stats.verified += len(commands)
        return decided


def _settle(waiting: _Waiting, outcome: Answer) -> None:
    if waiting.answer.done():
        return
    if isinstance(outcome, BaseException):
        waiting.answer.set_exception(outcome)
    else:
        waiting.answer.set_result(outcome)
