"""The availability cache on its own (services/availability.py): what it keeps, for how long,
how many reads it lets through, and what a write of this process does to a read in flight.
The loader is a stand-in for the database read that the test holds and releases."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from boxoffice.domain.errors import EventNotFound
from boxoffice.services.availability import AvailabilityCache
from boxoffice.services.clock import FakeClock

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"


class Reads:
    """The database's stand-in: answers `event_id@version`, counts reads, and while `hold`
    is set keeps each read waiting until its gate (in `gates`, in order) is opened."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.version = 1
        self.hold = False
        self.gates: list[asyncio.Event] = []
        self.unknown: set[str] = set()

    async def __call__(self, event_id: str, now: datetime) -> str:
        self.count[event_id] = self.count.get(event_id, 0) + 1
        version = self.version  # what the database holds when the read begins
        if self.hold:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
        if event_id in self.unknown:
            raise EventNotFound(event_id)
        return f"{event_id}@{version}"

    def release(self) -> None:
        for gate in self.gates:
            gate.set()


def cache_of(
    reads: Reads, clock: FakeClock, *, staleness_ms: int = 500, max_events: int = 100
) -> AvailabilityCache[str]:
    return AvailabilityCache(
        reads,
        clock=clock,
        max_staleness=timedelta(milliseconds=staleness_ms),
        max_events=max_events,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_entry_is_served_until_it_is_as_old_as_the_bound() -> None:
    reads, clock = Reads(), FakeClock()
    cache = cache_of(reads, clock)
    first = await cache.get(A)
    assert first.value == f"{A}@1"
    assert first.read_at == clock.now
    reads.version = 2
    clock.advance(0.499999)
    assert (await cache.get(A)).value == f"{A}@1"
    clock.advance(0.000001)
    assert (await cache.get(A)).value == f"{A}@2"
    assert reads.count == {A: 2}


async def test_a_stampede_is_one_read_and_everyone_gets_its_answer() -> None:
    reads, clock = Reads(), FakeClock()
    reads.hold = True
    cache = cache_of(reads, clock)
    waiting = [asyncio.ensure_future(cache.get(A)) for _ in range(100)]
    await settle()
    assert reads.count == {A: 1}
    assert not any(task.done() for task in waiting)
    reads.release()
    entries = await asyncio.gather(*waiting)
    assert {entry.value for entry in entries} == {f"{A}@1"}
    assert reads.count == {A: 1}


async def test_a_waiter_that_goes_away_does_not_cancel_the_read_for_the_others() -> None:
    reads, clock = Reads(), FakeClock()
    reads.hold = True
    cache = cache_of(reads, clock)
    first = asyncio.ensure_future(cache.get(A))
    second = asyncio.ensure_future(cache.get(A))
    await settle()
    first.cancel()  # its client disconnected
    await settle()
    reads.release()
    assert (await second).value == f"{A}@1"
    assert (await cache.get(A)).value == f"{A}@1"
    assert reads.count == {A: 1}


async def test_a_failed_read_answers_its_waiters_and_is_not_kept() -> None:
    reads, clock = Reads(), FakeClock()
    reads.unknown.add(A)
    reads.hold = True
    cache = cache_of(reads, clock)
    waiting = [asyncio.ensure_future(cache.get(A)) for _ in range(10)]
    await settle()
    reads.release()
    reads.hold = False
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(outcome, EventNotFound) for outcome in outcomes)
    assert reads.count == {A: 1}
    reads.unknown.clear()  # created since, by another process
    assert (await cache.get(A)).value == f"{A}@1"
    assert reads.count == {A: 2}
    assert len(cache) == 1


async def test_forget_drops_the_entry_and_the_read_in_flight_is_neither_joined_nor_kept() -> None:
    reads, clock = Reads(), FakeClock()
    cache = cache_of(reads, clock)
    await cache.get(A)
    reads.version = 2
    cache.forget([A])  # this process just sold seats of A
    assert (await cache.get(A)).value == f"{A}@2"

    reads.hold = True
    clock.advance(1)
    before = asyncio.ensure_future(cache.get(A))  # a read that began before the next sale
    await settle()
    reads.version = 3
    cache.forget([A.upper()])  # as a client spelt it
    after = asyncio.ensure_future(cache.get(A))  # must not join the older read
    await settle()
    assert reads.count == {A: 4}
    older, newer = reads.gates
    newer.set()
    assert (await after).value == f"{A}@3"
    older.set()  # the older read ends last: its answer must not replace the newer one
    assert (await before).value == f"{A}@2"
    reads.hold = False
    assert (await cache.get(A)).value == f"{A}@3"
    assert reads.count == {A: 4}


async def test_forget_ignores_what_names_no_event() -> None:
    reads, clock = Reads(), FakeClock()
    cache = cache_of(reads, clock)
    await cache.get(A)
    cache.forget(["not an id", ""])
    await cache.get(A)
    assert reads.count == {A: 1}


async def test_the_least_recently_read_event_is_dropped_beyond_the_cap() -> None:
    reads, clock = Reads(), FakeClock()
    cache = cache_of(reads, clock, max_events=2)
    await cache.get(A)
    await cache.get(B)
    await cache.get(A)  # A read more recently than B
    await cache.get(C)  # B goes
    assert len(cache) == 2
    await cache.get(A)
    await cache.get(C)
    assert reads.count == {A: 1, B: 1, C: 1}
    await cache.get(B)
    assert reads.count == {A: 1, B: 2, C: 1}
    assert len(cache) == 2


@pytest.mark.parametrize(("staleness_ms", "max_events"), [(0, 10), (-1, 10), (500, 0)])
def test_a_cache_that_would_keep_nothing_is_refused(staleness_ms: int, max_events: int) -> None:
    with pytest.raises(ValueError, match="not made at all"):
        cache_of(Reads(), FakeClock(), staleness_ms=staleness_ms, max_events=max_events)
