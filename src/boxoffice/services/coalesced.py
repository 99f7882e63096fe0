"""Reads that arrive together, made together: one query at a time for many keys.

At an on-sale's opening thousands of requests each need a small read first
(a new key's row, a customer's holds for its caps). One pooled connection and
one transaction each drained the pool and cost more than the requests' own
work (`make onsale`, docs/performance.md). Instead, the keys asked for queue
here while the previous query runs, and the next query takes them all (up to
`max_batch`); the same key asked twice at once is read once. A read waits at
most one query longer than it would alone.

Each query's time is observed in `boxoffice_coalesced_read_seconds{read=name}`:
a read's wait is the query in flight (if it may not join it), then its own.

`join_in_flight` says whether a key asked for while a query is already reading
it takes that query's answer. For a cache refreshing a verdict (`KeyRing`),
yes. For a read that must see every write committed before it was asked
(a customer's holds, for its caps), no: it waits for the next query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from boxoffice.observability import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

__all__ = ["Coalesced"]


class _Read(Generic[V]):
    """One key's read: whoever waits for it, each on a future of its own. The query
    answers each of them itself: a future shared and shielded cost each reader one more
    loop turn (tests/unit/test_coalesced.py), and a turn of a loaded loop lasts as long
    as the requests it serves (20 ms in a sale, docs/performance.md)."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[V]] = []

    def answer(self, value: V) -> None:
        for waiter in self.waiters:
            if not waiter.done():  # a reader that gave up has cancelled its own
                waiter.set_result(value)

    def fail(self, error: BaseException) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(error)

    def cancel(self) -> None:
        for waiter in self.waiters:
            waiter.cancel()


class Coalesced(Generic[K, V]):
    """`get(key)` through `lookup(keys) -> values` (in the keys' order), in batches."""

    def __init__(
        self,
        lookup: Callable[[Sequence[K]], Awaitable[Sequence[V]]],
        *,
        name: str,
        max_batch: int = 500,
        join_in_flight: bool = True,
    ) -> None:
        self._lookup = lookup
        self._labels = (name,)  # of the query-time metric
        self._max_batch = max_batch
        self._join_in_flight = join_in_flight
        self._pending: dict[K, _Read[V]] = {}  # queued or being read
        self._queued: dict[K, _Read[V]] = {}  # for the next query
        self._querying: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        """The value of `key`, read by the next query (or the one already reading it)."""
        read = (self._pending if self._join_in_flight else self._queued).get(key)
        if read is None:
            read = self._pending[key] = self._queued[key] = _Read()
            if self._querying is None:
                self._querying = asyncio.ensure_future(self._query_queued())
        # A future of its own: a caller that gives up cancels it, not the read the others
        # wait for.
        mine: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        read.waiters.append(mine)
        return await mine

    def forget(self) -> None:
        """Reads asked for from now on are made anew: none joins one begun before. (Those
        still queued begin after this anyway, and their waiters must keep them.)"""
        self._pending = {key: self._queued[key] for key in self._pending if key in self._queued}

    def _done(self, batch: dict[K, _Read[V]]) -> None:
        for key, read in batch.items():
            if self._pending.get(key) is read:
                del self._pending[key]

    async def _query_queued(self) -> None:
        """Query for the queued keys, a batch at a time, until none is left."""
        try:
            # The reads of the next turn join the first query too. Started a turn sooner,
            # queries took fewer reads each, and the checkout benchmark's caps reads made
            # more of them (docs/performance.md, "Where a purchase's round trips go").
            await asyncio.sleep(0)
            while self._queued:
                keys = list(self._queued)[: self._max_batch]
                batch = {key: self._queued.pop(key) for key in keys}
                started = time.perf_counter()
                try:
                    values = await self._lookup(keys)
                    metrics.COALESCED_READS.observe(time.perf_counter() - started, self._labels)
                    if len(values) != len(keys):
                        raise RuntimeError(f"{len(keys)} keys looked up, {len(values)} values")
                except BaseException as exc:  # each waiter gets it (a 503, for one)
                    self._done(batch)
                    for read in batch.values():
                        read.fail(exc)
                    if not isinstance(exc, Exception):
                        raise  # cancelled: the server is stopping
                    continue
                self._done(batch)
                for read, value in zip(batch.values(), values, strict=True):  # checked
                    read.answer(value)
        finally:
            self._querying = None
            self._done(self._queued)
            for read in self._queued.values():  # cancelled: nobody waits in vain
                read.cancel()
            self._queued.clear()
