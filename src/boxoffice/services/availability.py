"""Events' availability as `GET /events/{id}` answers it, kept per process for a bounded time.

    GET /events/{id} ──> an entry read less than max_staleness ago? ──yes──> it (no database)
                                   │ no
                                   ▼
                         a read of that event in flight? ──yes──> wait for its answer
                                   │ no
                                   ▼
                         read the database, keep the answer (read_at = when the read began)

- **Bounded staleness.** An entry is served while `0 <= now - read_at <
  max_staleness` (AVAILABILITY_MAX_STALENESS_MS), `now` from the app's clock:
  what a reader sees is never older than that, counted from the moment the
  read that made it began. A clock that steps back makes every entry stale.
- **Single flight.** However many requests miss at once, one reads the
  database per event; the others await that read (shielded: a client that
  goes away does not cancel it for the rest). A read that fails, the event
  unknown included, answers everyone waiting for it and is not kept: an event
  created a moment later on another process is found by the next request.
- **Bounded size.** At most `max_events` events are kept, the least recently
  read dropped first (AVAILABILITY_CACHE_EVENTS).
- **This process's writes.** `forget(event_ids)` drops the entries of events
  this process has just written to (the booker calls it once per committed
  batch, before answering), and a read already in flight for one of them is
  neither kept nor joined by later requests: a customer reading the event
  after buying from this process sees the purchase. Other processes' writes
  show when the entry expires, within the staleness bound.

Reading is all this is for: booking, holds and every other write decide on the
live rows in their own transaction, never on an entry here.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from boxoffice.domain.ids import cached_canonical_id
from boxoffice.observability import metrics
from boxoffice.services.clock import Clock

T = TypeVar("T")

# What the cache keeps of an event: made by `load(event_id, now)`, whatever the caller needs.
Load = Callable[[str, datetime], Awaitable[T]]

_NO_AGE = timedelta(0)


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """An event's answer, and when the read that made it began."""

    value: T
    read_at: datetime


class AvailabilityCache(Generic[T]):
    """Per-process, read-through, single-flight, size-bounded; see the module's docstring."""

    def __init__(
        self,
        load: Load[T],
        *,
        clock: Clock,
        max_staleness: timedelta,
        max_events: int,
    ) -> None:
        if max_staleness <= _NO_AGE or max_events < 1:
            raise ValueError("a cache keeps something for some time, or is not made at all")
        self._load = load
        self._clock = clock
        self.max_staleness = max_staleness
        self.max_events = max_events
        self._entries: OrderedDict[str, Entry[T]] = OrderedDict()
        self._flights: dict[str, asyncio.Task[Entry[T]]] = {}

    async def get(self, event_id: str) -> Entry[T]:
        """The event's entry, read at most `max_staleness` ago; the loader's error if it fails.

        `event_id` is canonical (lower case, hyphenated): the caller has parsed it.
        """
        now = self._clock()
        entry = self._entries.get(event_id)
        if entry is not None and _NO_AGE <= now - entry.read_at < self.max_staleness:
            self._entries.move_to_end(event_id)
            metrics.AVAILABILITY_LOOKUPS.inc(("hit",))
            return entry
        metrics.AVAILABILITY_LOOKUPS.inc(("miss",))
        flight = self._flights.get(event_id)
        if flight is None:
            flight = asyncio.ensure_future(self._read(event_id, now))
            self._flights[event_id] = flight
        return await asyncio.shield(flight)

    async def _read(self, event_id: str, now: datetime) -> Entry[T]:
        metrics.AVAILABILITY_REFRESHES.inc()
        me = asyncio.current_task()
        try:
            entry = Entry(await self._load(event_id, now), now)
        finally:
            # Still the event's read (no forget() since it began): done, and kept below.
            current = self._flights.get(event_id) is me
            if current:
                del self._flights[event_id]
        if current:
            self._entries[event_id] = entry
            self._entries.move_to_end(event_id)
            while len(self._entries) > self.max_events:
                self._entries.popitem(last=False)
        return entry

    def forget(self, event_ids: Iterable[str]) -> None:
        """Drop what is kept of these events (as clients spell them), and let no read in
        flight for them be joined or kept: this process has just changed their seats."""
        for spelt in event_ids:
            event_id = cached_canonical_id(spelt)
            if event_id is not None:
                self._entries.pop(event_id, None)
                self._flights.pop(event_id, None)

    def __len__(self) -> int:
        return len(self._entries)
