"""Reads made together (`services/coalesced.py`): a burst in one query, one query at a
time, the same key read once, errors and cancellations kept to whom they concern."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from boxoffice.services.coalesced import Coalesced


class Lookup:
    """Doubles each key; each query waits for `release` when one is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release: asyncio.Event | None = None
        self.fail_next = False

    async def __call__(self, keys: Sequence[int]) -> list[int]:
        self.batches.append(list(keys))
        if self.release is not None:
            await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database went away")
        return [key * 2 for key in keys]


async def test_reads_asked_for_at_once_are_one_query_and_each_gets_its_value() -> None:
    lookup = Lookup()
    reads = Coalesced(lookup, name="test")
    values = await asyncio.gather(*(reads.get(key) for key in (1, 2, 3, 2, 1)))
    assert values == [2, 4, 6, 4, 2]
    assert lookup.batches == [[1, 2, 3]]  # the same key read once


async def test_reads_asked_for_during_a_query_wait_for_the_next_one_together() -> None:
    lookup = Lookup()
    lookup.release = asyncio.Event()
    reads = Coalesced(lookup, name="test", max_batch=3)
    first = asyncio.ensure_future(reads.get(1))
    await asyncio.sleep(0.01)  # the first query is under way, and waits
    later = [asyncio.ensure_future(reads.get(key)) for key in range(10, 15)]
    await asyncio.sleep(0.01)
    assert lookup.batches == [[1]]  # one query at a time
    lookup.release.set()
    assert await asyncio.gather(first, *later) == [2, 20, 22, 24, 26, 28]
    assert lookup.batches == [[1], [10, 11, 12], [13, 14]]


async def test_a_failed_query_fails_its_own_readers_only() -> None:
    lookup = Lookup()
    lookup.release = asyncio.Event()
    reads = Coalesced(lookup, name="test")
    lookup.fail_next = True
    failing = asyncio.ensure_future(reads.get(1))
    await asyncio.sleep(0.01)
    after = asyncio.ensure_future(reads.get(2))
    await asyncio.sleep(0.01)
    lookup.release.set()
    with pytest.raises(RuntimeError):
        await failing
    assert await after == 4
    assert await reads.get(1) == 2  # read again, not the failure remembered


async def test_a_reader_that_gives_up_does_not_cancel_the_read_of_others() -> None:
    lookup = Lookup()
    lookup.release = asyncio.Event()
    reads = Coalesced(lookup, name="test")
    impatient = asyncio.ensure_future(reads.get(7))
    patient = asyncio.ensure_future(reads.get(7))
    await asyncio.sleep(0.01)
    impatient.cancel()
    lookup.release.set()
    assert await patient == 14
    assert impatient.cancelled()


async def test_after_forget_a_read_does_not_join_one_begun_before() -> None:
    lookup = Lookup()
    lookup.release = asyncio.Event()
    reads = Coalesced(lookup, name="test")
    before = asyncio.ensure_future(reads.get(5))
    await asyncio.sleep(0.01)
    reads.forget()
    after = asyncio.ensure_future(reads.get(5))
    await asyncio.sleep(0.01)
    lookup.release.set()
    assert await asyncio.gather(before, after) == [10, 10]
    assert lookup.batches == [[5], [5]]


async def test_a_read_queued_when_forget_comes_is_still_answered() -> None:
    """forget() while a key waits for the next query, then the key asked for again: both
    readers get the value (the first one's future was once left unanswered for ever)."""
    lookup = Lookup()
    lookup.release = asyncio.Event()
    reads = Coalesced(lookup, name="test")
    under_way = asyncio.ensure_future(reads.get(1))
    await asyncio.sleep(0.01)  # [1] is being read; 2 queues for the next query
    queued = asyncio.ensure_future(reads.get(2))
    await asyncio.sleep(0)
    reads.forget()
    again = asyncio.ensure_future(reads.get(2))
    await asyncio.sleep(0)
    lookup.release.set()
    assert await asyncio.wait_for(asyncio.gather(under_way, queued, again), 1) == [2, 4, 4]


async def test_a_lookup_that_answers_the_wrong_number_of_values_fails_its_readers() -> None:
    async def short(keys: Sequence[int]) -> list[int]:
        return []

    reads = Coalesced(short, name="test")
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(reads.get(1), 1)


async def test_without_joining_in_flight_a_read_sees_what_came_after_the_one_under_way() -> None:
    lookup = Lookup()
    lookup.release = asyncio.Event()
    reads = Coalesced(lookup, name="test", join_in_flight=False)
    first = asyncio.ensure_future(reads.get(3))
    await asyncio.sleep(0.01)
    second = [asyncio.ensure_future(reads.get(3)) for _ in range(2)]
    await asyncio.sleep(0.01)
    lookup.release.set()
    assert await asyncio.gather(first, *second) == [6, 6, 6]
    assert lookup.batches == [[3], [3]]  # the later two: one new query, together


async def test_each_query_s_time_is_observed_under_its_name() -> None:
    from prometheus_client import REGISTRY

    from boxoffice.observability import metrics

    def seen(suffix: str) -> float:
        metrics.flush()
        labels = {"read": "timed"}
        return REGISTRY.get_sample_value(f"boxoffice_coalesced_read_seconds{suffix}", labels) or 0

    lookup = Lookup()
    lookup.release = asyncio.Event()
    reads = Coalesced(lookup, name="timed", max_batch=2)
    count, total = seen("_count"), seen("_sum")
    waiting = [asyncio.ensure_future(reads.get(key)) for key in (1, 2, 3)]
    await asyncio.sleep(0.05)  # the first query (1, 2) waits this long
    lookup.release.set()
    await asyncio.gather(*waiting)
    assert seen("_count") - count == 2  # two queries, not three reads
    assert seen("_sum") - total >= 0.05


async def _turns_until_answered(reads: Coalesced[int, int], lookup: Lookup) -> int:
    """Loop turns from the query's answer to its reader's resumption."""
    lookup.release = asyncio.Event()
    reader = asyncio.ensure_future(reads.get(1))
    for _ in range(5):  # the query is under way, and waits
        await asyncio.sleep(0)
    assert not reader.done()
    lookup.release.set()
    turns = 0
    while not reader.done():
        await asyncio.sleep(0)
        turns += 1
    assert reader.result() == 2
    return turns


async def test_a_reader_resumes_the_turn_after_its_query_answers() -> None:
    """Under load every loop turn costs a request a turn's length (the sale's loops ran
    20 ms turns): the query answers each reader's own future, with no future in between
    (a shield over a shared one cost each read one turn more, twice on a hold's path)."""
    lookup = Lookup()
    assert await _turns_until_answered(Coalesced(lookup, name="test"), lookup) == 2
    assert (
        await _turns_until_answered(Coalesced(lookup, name="t", join_in_flight=False), lookup) == 2
    )


async def test_a_lone_read_is_answered_in_three_turns() -> None:
    """One turn for the query to start, one to gather the reads of the next turn too, one
    for the reader to resume (and none for a future between the query and the reader)."""
    lookup = Lookup()
    reads = Coalesced(lookup, name="test")
    reader = asyncio.ensure_future(reads.get(1))
    await asyncio.sleep(0)  # the reader asks
    turns = 0
    while not reader.done():
        await asyncio.sleep(0)
        turns += 1
    assert (turns, reader.result(), lookup.batches) == (3, 2, [[1]])
