"""The combiner: several requests per transaction, each with its own all-or-nothing answer.

Requests created in one go (`asyncio.gather`) all queue before the committer
task runs, so they form one batch; `booker.stats` proves it.

Failures are injected by replacing `reserve_batch`, which is synchronous: on
SQLite it runs on the writer (a process of its own by default, or a thread),
on PostgreSQL inside `run_sync`. A fault that SQLite's writer process must run
is a module-level function of `tests/support/writer_faults.py`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.util import await_only

from boxoffice.booking import BatchedBooker, DirectBooker
from boxoffice.booking import batched as batched_module
from boxoffice.booking import connections as connections_module
from boxoffice.booking import locked as locked_module
from boxoffice.config import async_database_url
from boxoffice.db.database import Database, Limits
from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.db.tables import bookings, customer_tickets
from boxoffice.domain.commands import Book, CancelBooking, HoldItemRequest, PlaceHold
from boxoffice.domain.errors import (
    CustomerLimitExceeded,
    EventNotFound,
    InsufficientSeats,
    SectionNotFound,
)
from boxoffice.domain.model import Booking, EventSpec, Hold, SectionSpec
from boxoffice.services.events import create_event
from tests.integration.test_booking_path import inventory, new_event
from tests.integration.test_checkout import assert_consistent
from tests.integration.test_metrics_sampling import exported
from tests.support.postgres import TERMINATE_OUR_OTHER_SESSIONS
from tests.support.server import inventory_check
from tests.support.writer_faults import (
    GATE_TIMEOUT_SECONDS,
    GateTimeout,
    gate_path,
    nothing,
    reached_gate,
    reserve_then_fail_batches,
    reserve_then_lose_the_connection,
    reserve_then_wait_for_gate,
)

# These exercise what only PostgreSQL has (the one-statement path, killable
# server connections): they take the PostgreSQL half of `database_url` only.
POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# SQLite's writer runs as a process by default; these also run it on a thread.
BOTH_SQLITE_WRITERS = pytest.mark.parametrize("sqlite_writer", ["process", "thread"])


async def book_all(booker: BatchedBooker, requests: list[Book]) -> list[Any]:
    return await asyncio.gather(*(booker.submit(r) for r in requests), return_exceptions=True)


# Both the one-statement path and the locked path must yield exactly this.
FIFO_ASKS = (2, 3, 1, 1, 1)  # with 4 seats left: 2 fits; 3 does not; 1 and 1 fit; 1 finds 0


def assert_first_come_first_served(results: list[Any]) -> None:
    assert [type(r).__name__ for r in results] == [
        "Booking",
        "InsufficientSeats",
        "Booking",
        "Booking",
        "InsufficientSeats",
    ]
    assert results[1].remaining == 2  # what was left when its turn came
    assert results[4].remaining == 0


class HeldCommitter:
    """The committer held inside its transaction (the locked path) until `open()`.

    On SQLite the gate is a file the writer (a process, or a thread) waits for after
    the batch's writes, and every batch waits: the file stays, so once it is opened
    later batches pass. On PostgreSQL the batch waits before its writes, on the event
    loop, and `only_qty` picks the batch that waits. Neither wait lasts for ever:
    past GATE_TIMEOUT_SECONDS it fails the test (`GateTimeout`).
    """

    def __init__(self, database_url: str) -> None:
        self._sqlite = database_url.startswith("sqlite")
        self._gate = gate_path(database_url)
        self._database_url = database_url
        self._reached = asyncio.Event()
        self._opened = asyncio.Event()
        self._given_up = False

    async def reached(self) -> None:
        """Return once a batch waits at the gate."""
        if self._sqlite:
            await reached_gate(self._database_url)
            return
        try:
            await asyncio.wait_for(self._reached.wait(), GATE_TIMEOUT_SECONDS)
        except TimeoutError:
            raise GateTimeout("no batch reached the gate") from None

    def open(self) -> None:
        if self._sqlite:
            self._gate.touch()
        else:
            self._opened.set()

    async def wait(self) -> None:
        """PostgreSQL's batch, inside its transaction: block until `open()`."""
        self._reached.set()
        if self._given_up:  # a failed batch is retried one command at a time: fail at once
            raise GateTimeout("the gate was never opened")
        try:
            await asyncio.wait_for(self._opened.wait(), GATE_TIMEOUT_SECONDS)
        except TimeoutError:
            self._given_up = True
            raise GateTimeout("the gate was never opened") from None


def hold_the_committer(
    monkeypatch: pytest.MonkeyPatch, database_url: str, *, only_qty: int | None = None
) -> HeldCommitter:
    """Make the committer wait inside its transaction until the gate is opened."""
    held = HeldCommitter(database_url)
    if database_url.startswith("sqlite"):
        monkeypatch.setattr(locked_module, "apply_commands", reserve_then_wait_for_gate)
        return held
    real_batch = locked_module.apply_commands

    def slow_batch(conn, requests, now):  # type: ignore[no-untyped-def]
        if only_qty is None or requests[0].qty == only_qty:
            await_only(held.wait())  # inside run_sync's greenlet, on the event loop
        return real_batch(conn, requests, now)

    monkeypatch.setattr(locked_module, "apply_commands", slow_batch)
    return held


async def test_a_lone_request_commits_at_once(booker: BatchedBooker, database: Database) -> None:
    event = await new_event(database, 5)
    booking = await booker.submit(Book(event.id, event.sections[0].id, 2))
    assert booking.qty == 2
    assert (booker.stats.batches, booker.stats.largest) == (1, 1)


@BOTH_SQLITE_WRITERS
async def test_fifo_with_partial_sell_out_inside_one_batch(
    booker: BatchedBooker, database: Database
) -> None:
    event = await new_event(database, 4)
    s = event.sections[0].id
    results = await book_all(booker, [Book(event.id, s, q) for q in FIFO_ASKS])
    assert booker.stats.largest == len(FIFO_ASKS), "the requests did not share one transaction"
    assert_first_come_first_served(results)
    assert await inventory(database, s) == (4, 0, 4)


async def test_a_big_early_request_is_refused_while_a_later_small_one_fits(
    booker: BatchedBooker, database: Database
) -> None:
    event = await new_event(database, 2)
    s = event.sections[0].id
    results = await book_all(booker, [Book(event.id, s, q) for q in (3, 1, 2)])
    assert isinstance(results[0], InsufficientSeats)
    assert isinstance(results[1], Booking)
    assert isinstance(results[2], InsufficientSeats), "the 2-seat request came after the 1"
    assert await inventory(database, s) == (2, 1, 1)


async def test_mixed_sections_and_unknown_targets_in_one_batch(
    booker: BatchedBooker, database: Database
) -> None:
    first = await new_event(database, 3, 5)
    other = await new_event(database, 2)
    a, b = first.sections[0].id, first.sections[1].id
    requests = [
        Book(first.id, a, 2),
        Book(first.id, b, 5),
        Book(first.id, other.sections[0].id, 1),  # section of another event
        Book(str(uuid.uuid4()), a, 1),  # unknown event
        Book("garbage", "garbage", 1),
        Book(first.id, a, 1),
        Book(other.id, other.sections[0].id, 2),
        Book(first.id, b, 1),
    ]
    results = await book_all(booker, requests)
    assert booker.stats.largest == len(requests)
    kinds = [type(r) for r in results]
    assert kinds == [
        Booking,
        Booking,
        SectionNotFound,
        EventNotFound,
        EventNotFound,
        Booking,
        Booking,
        InsufficientSeats,
    ]
    assert await inventory(database, a) == (3, 0, 3)
    assert await inventory(database, b) == (5, 0, 5)
    assert await inventory(database, other.sections[0].id) == (2, 0, 2)
    assert {r.total_price_cents for r in results if isinstance(r, Booking)} == {
        2500 * q for q in (2, 5, 1, 2)
    }


@BOTH_SQLITE_WRITERS
async def test_a_failure_mid_batch_fails_only_that_request(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = await new_event(database, 10)
    s = event.sections[0].id
    real_verify = batched_module.apply_if_unchanged

    async def verify_faulty(conn, commands, inventory, remembered, now):  # type: ignore[no-untyped-def]
        if any(c.qty == 3 for c in commands):
            raise IntegrityError("INSERT", {}, Exception("this one is bad"))
        return await real_verify(conn, commands, inventory, remembered, now)

    # The faulty request fails on every path a request can take.
    monkeypatch.setattr(locked_module, "apply_commands", reserve_then_fail_batches)
    monkeypatch.setattr(batched_module, "apply_if_unchanged", verify_faulty)
    results = await book_all(booker, [Book(event.id, s, q) for q in (1, 3, 2)])
    assert isinstance(results[0], Booking)
    assert isinstance(results[1], IntegrityError)
    assert isinstance(results[2], Booking)
    assert await inventory(database, s) == (10, 7, 3)


@BOTH_SQLITE_WRITERS
async def test_database_errors_fail_the_whole_batch_cleanly(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = await new_event(database, 10)
    s = event.sections[0].id
    real_batch = locked_module.apply_commands
    monkeypatch.setattr(locked_module, "apply_commands", reserve_then_lose_the_connection)
    results = await book_all(booker, [Book(event.id, s, q) for q in (1, 2, 3)])
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    assert await inventory(database, s) == (10, 10, 0), "half a batch was written"
    monkeypatch.setattr(locked_module, "apply_commands", real_batch)
    assert (await booker.submit(Book(event.id, s, 1))).qty == 1, "the committer died"


@BOTH_SQLITE_WRITERS
async def test_a_cancelled_waiting_request_takes_no_seat(
    booker: BatchedBooker,
    database: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = await new_event(database, 10)
    s = event.sections[0].id
    held = hold_the_committer(monkeypatch, database_url, only_qty=1)
    first = asyncio.create_task(booker.submit(Book(event.id, s, 1)))
    await held.reached()  # the committer is now inside the first transaction
    gone = asyncio.create_task(booker.submit(Book(event.id, s, 4)))
    stays = asyncio.create_task(booker.submit(Book(event.id, s, 2)))
    await asyncio.sleep(0.01)
    gone.cancel()  # the client disconnected while waiting
    held.open()
    assert (await first).qty == 1
    assert (await stays).qty == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await inventory(database, s) == (10, 7, 3)


async def test_a_stopped_booker_answers_503(database: Database) -> None:
    event = await new_event(database, 10)
    path = BatchedBooker(database, max_tickets_per_booking=10)
    await path.start()
    await path.stop()
    with pytest.raises(DatabaseUnavailable, match="not running"):  # a 503, not a 500
        await path.submit(Book(event.id, event.sections[0].id, 1))


async def test_batches_are_capped(database: Database) -> None:
    event = await new_event(database, 100)
    path = BatchedBooker(database, max_tickets_per_booking=10, max_batch_size=4)
    waits_before = exported("boxoffice_booking_queue_wait_seconds_count")
    await path.start()
    try:
        results = await book_all(path, [Book(event.id, event.sections[0].id, 1) for _ in range(10)])
    finally:
        await path.stop()
    assert all(isinstance(r, Booking) for r in results)
    assert path.stats.largest == 4
    assert path.stats.requests == 10
    assert path.stats.batches < 10
    waited = exported("boxoffice_booking_queue_wait_seconds_count") - waits_before
    assert waited == 10, "the queue's wait is one observation per command, not per batch"


# The one-statement path (PostgreSQL): decide from remembered seats, verify while writing.


def batch_paths() -> dict[tuple[str, str], float]:
    """`boxoffice_batch_paths_total` by (path, reason), after a flush."""
    from prometheus_client import REGISTRY

    from boxoffice.observability import metrics

    metrics.flush()
    return {
        (sample.labels["path"], sample.labels["reason"]): sample.value
        for family in REGISTRY.collect()
        if family.name == "boxoffice_batch_paths"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def locked_batches(reason: str) -> float:
    return batch_paths().get(("locked", reason), 0.0)


def paths_since(before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """The batches counted since `before` (`batch_paths()`), by (path, reason)."""
    return {
        key: n - before.get(key, 0.0)
        for key, n in batch_paths().items()
        if n > before.get(key, 0.0)
    }


def batch_writes() -> dict[str, float]:
    """`boxoffice_batch_write_seconds`'s count by path, after a flush."""
    from prometheus_client import REGISTRY

    from boxoffice.observability import metrics

    metrics.flush()
    return {
        path: REGISTRY.get_sample_value("boxoffice_batch_write_seconds_count", {"path": path})
        or 0.0
        for path in ("memory", "locked")
    }


async def warm(booker: BatchedBooker, event: Any, index: int = 0) -> None:
    """One booking under lock, after which the committer remembers the section."""
    await booker.submit(Book(event.id, event.sections[index].id, 1))


async def test_remembered_sections_book_in_one_statement(
    booker: BatchedBooker, database: Database
) -> None:
    event = await new_event(database, 10)
    s = event.sections[0].id
    before, writes_before = batch_paths(), batch_writes()
    await warm(booker, event)  # 9 left
    results = await book_all(booker, [Book(event.id, s, q) for q in (2, 3, 1)])
    assert all(isinstance(r, Booking) for r in results)
    assert await inventory(database, s) == (10, 3, 7)
    if database.dialect == "postgresql":
        assert booker.stats.verified == 3
        assert booker.stats.retried == 0
        # Each batch counted once: the first under lock (nothing remembered yet).
        assert paths_since(before) == {
            ("locked", "section_not_remembered"): 1,
            ("memory", "unchanged"): booker.stats.batches - 1,
        }
        # Each batch's write timed once, on its path (the memory try of the first, which
        # found nothing remembered, is not a write).
        writes = batch_writes()
        assert {path: writes[path] - writes_before[path] for path in writes} == {
            "locked": 1,
            "memory": booker.stats.batches - 1,
        }
    else:  # SQLite's batches have one path: not timed apart from the batch
        assert batch_writes() == writes_before


async def test_a_refusal_on_remembered_sections_is_decided_under_lock_first_come_first_served(
    booker: BatchedBooker, database: Database
) -> None:
    """A refusal must be decided on locked rows (where expired holds give their seats
    back first), so a remembered batch that would refuse anything goes the locked way,
    whole, and is decided there in the same order."""
    event = await new_event(database, 5)
    s = event.sections[0].id
    await warm(booker, event)  # 4 left
    before = batch_paths()
    results = await book_all(booker, [Book(event.id, s, q) for q in FIFO_ASKS])
    assert_first_come_first_served(results)
    assert await inventory(database, s) == (5, 0, 5)
    if database.dialect == "postgresql":
        assert booker.stats.verified == 0
        assert booker.stats.retried == 5
        assert paths_since(before) == {("locked", "refusal"): 1}


async def test_seats_taken_behind_our_back_are_retried_under_lock(
    booker: BatchedBooker, database: Database
) -> None:
    """Another process books the section: what we remembered is stale, so nothing is
    decided on it; the batch is retried with row locks, against the true count."""
    event = await new_event(database, 6, 6)
    stale, fresh = event.sections[0].id, event.sections[1].id
    await book_all(booker, [Book(event.id, stale, 1), Book(event.id, fresh, 1)])
    other_process = DirectBooker(database, max_tickets_per_booking=10)
    await other_process.submit(Book(event.id, stale, 3))  # stale: 2 left, not 5

    asks = [(stale, 3), (fresh, 2), (stale, 2), (fresh, 4)]
    before = batch_paths()
    results = await book_all(booker, [Book(event.id, s, q) for s, q in asks])
    assert isinstance(results[0], InsufficientSeats)
    assert results[0].remaining == 2, "decided on the remembered 5 instead of the true 2"
    assert isinstance(results[1], Booking)
    assert isinstance(results[2], Booking)
    assert isinstance(results[3], InsufficientSeats)
    assert await inventory(database, stale) == (6, 0, 6)
    assert await inventory(database, fresh) == (6, 3, 3)
    if database.dialect == "postgresql":
        assert booker.stats.retried == 4  # all or nothing: the whole batch, under lock
        # From memory the last ask (4 of a remembered 3) is refused first: refusals are
        # decided under lock (the stale count is `test_a_sale_committed_while_...`'s).
        assert paths_since(before) == {("locked", "refusal"): 1}
        # Refreshed: the next batch on it is settled in one statement again.
        verified = booker.stats.verified
        more = await book_all(booker, [Book(event.id, fresh, 1) for _ in range(3)])
        assert all(isinstance(r, Booking) for r in more)
        assert booker.stats.verified == verified + 3


async def test_unknown_targets_next_to_remembered_ones(
    booker: BatchedBooker, database: Database
) -> None:
    event = await new_event(database, 4)
    other = await new_event(database, 4)
    s = event.sections[0].id
    await warm(booker, event)
    await warm(booker, other)
    results = await book_all(
        booker,
        [
            Book(event.id, s, 1),
            Book(event.id, other.sections[0].id, 1),  # remembered, wrong event
            Book(event.id, s, 1),
        ],
    )
    assert [type(r) for r in results] == [Booking, SectionNotFound, Booking]
    assert await inventory(database, s) == (4, 1, 3)
    assert await inventory(database, other.sections[0].id) == (4, 3, 1)


def test_remembered_sections_are_bounded_and_hand_out_copies() -> None:
    from boxoffice.booking.remembered import Remembered
    from boxoffice.domain.model import Section

    remembered = Remembered(max_size=2)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    event = str(uuid.uuid4())
    remembered.remember({i: Section(i, event, "S", 1, 5, 5) for i in ids})
    assert len(remembered) == 2
    assert remembered.inventory_for([Book(event, ids[0], 1)], NOW) is None  # the oldest was dropped
    copies = remembered.inventory_for([Book(event, ids[2], 1)], NOW)
    assert copies is not None
    copies.sections[ids[2]].sell(5)
    again = remembered.inventory_for([Book(event, ids[2], 1)], NOW)
    assert again is not None
    assert again.sections[ids[2]].remaining == 5


NOW = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)


def test_what_is_not_decided_from_memory() -> None:
    """A capped customer's bookings and holds are (the statement checks the cap);
    a capped customer's release and a cancellation are not."""
    from boxoffice.booking.remembered import Remembered
    from boxoffice.domain.commands import CancelBooking, HoldItemRequest, PlaceHold, ReleaseHold
    from boxoffice.domain.model import Hold, HoldItem, Section

    remembered = Remembered()
    event, capped, free = (str(uuid.uuid4()) for _ in range(3))
    remembered.remember(
        {
            capped: Section(capped, event, "S", 1, 5, 5, max_per_customer=2),
            free: Section(free, event, "T", 1, 5, 5),
        }
    )
    assert remembered.inventory_for([Book(event, capped, 1)], NOW) is not None  # no customer named
    assert remembered.inventory_for([Book(event, capped, 1, customer_id="c")], NOW) is not None
    hold = PlaceHold(event, (HoldItemRequest(capped, 1),), 60, "c")
    assert remembered.inventory_for([hold], NOW) is not None
    assert remembered.inventory_for([Book(event, free, 1, customer_id="c")], NOW) is not None
    assert remembered.inventory_for([CancelBooking(str(uuid.uuid4()))], NOW) is None

    def held(section: str, customer: str | None) -> Hold:
        item = HoldItem(section, 1, 1)
        until = NOW + timedelta(minutes=5)
        return Hold(str(uuid.uuid4()), event, customer, (item,), "active", until, NOW)

    capped_hold, free_hold, nameless = held(capped, "c"), held(free, "c"), held(capped, None)
    remembered.remember_holds([capped_hold, free_hold, nameless], [])
    assert remembered.inventory_for([ReleaseHold(capped_hold.id)], NOW) is None
    assert remembered.inventory_for([ReleaseHold(free_hold.id)], NOW) is not None
    assert remembered.inventory_for([ReleaseHold(nameless.id)], NOW) is not None


def test_each_batch_sent_the_locked_way_is_counted_with_its_reason() -> None:
    """What an operator reads to see why batches take row locks (`boxoffice_batch_paths`)."""
    from boxoffice.booking.remembered import Remembered
    from boxoffice.domain.commands import CancelBooking, ReleaseHold
    from boxoffice.domain.model import Section

    remembered = Remembered()
    event, known, unknown = (str(uuid.uuid4()) for _ in range(3))
    remembered.remember({known: Section(known, event, "S", 1, 5, 5)})
    before = {
        reason: locked_batches(reason)
        for reason in ("section_not_remembered", "cancellation", "hold_not_remembered")
    }
    assert remembered.inventory_for([Book(event, known, 1), Book(event, unknown, 1)], NOW) is None
    assert remembered.inventory_for([CancelBooking(str(uuid.uuid4()))], NOW) is None
    assert remembered.inventory_for([ReleaseHold(str(uuid.uuid4()))], NOW) is None
    assert remembered.inventory_for([Book(event, known, 1)], NOW) is not None
    assert {reason: locked_batches(reason) - n for reason, n in before.items()} == {
        "section_not_remembered": 1,
        "cancellation": 1,
        "hold_not_remembered": 1,
    }


async def tally(database: Database, event_id: str, customer: str) -> tuple[int, int] | None:
    """(tickets, max_tickets) of a customer's row in `customer_tickets`, if it has one."""
    async with database.engine.connect() as conn:
        row = (
            await conn.execute(
                select(customer_tickets.c.tickets, customer_tickets.c.max_tickets).where(
                    customer_tickets.c.event_id == uuid.UUID(event_id),
                    customer_tickets.c.customer_id == customer,
                )
            )
        ).first()
    return None if row is None else (row.tickets, row.max_tickets)


@POSTGRESQL_ONLY
async def test_capped_customers_book_in_one_statement_and_the_cap_is_checked_on_the_true_count(
    booker: BatchedBooker, database: Database
) -> None:
    """Decided from memory as if the customer had nothing, written with its tally; a
    customer over the cap (tickets bought through another process) fails the statement's
    CHECK, and the batch is decided again under lock: refused, with what is left."""
    event = await create_event(
        database,
        EventSpec("Concert", (SectionSpec("A", 2500, 10), SectionSpec("B", 2500, 10)), 4),
        datetime.now(UTC),
    )
    a, b = event.sections[0].id, event.sections[1].id
    await warm(booker, event)  # remembered: section A, 9 left
    first = await book_all(booker, [Book(event.id, a, 2, customer_id="c1")] * 2)
    assert all(isinstance(r, Booking) for r in first), first
    assert booker.stats.verified == 2, "a capped customer's first tickets went the locked way"
    assert await tally(database, event.id, "c1") == (4, 4), "the tally was not made and added to"
    hold = PlaceHold(event.id, (HoldItemRequest(a, 1),), 600, "c3")
    assert isinstance(await booker.submit(hold), Hold)
    assert booker.stats.verified == 3, "a capped customer's hold went the locked way"
    assert await tally(database, event.id, "c3") == (1, 4)

    other_process = DirectBooker(database, max_tickets_per_booking=10)
    await other_process.submit(Book(event.id, b, 3, customer_id="c2"))  # B only: A stays fresh
    refused = await book_all(booker, [Book(event.id, a, 2, customer_id="c2")])
    assert isinstance(refused[0], CustomerLimitExceeded), refused
    assert refused[0].remaining_for_customer == 1, "decided on no tickets, not the true 3"
    assert booker.stats.retried == 1
    assert await tally(database, event.id, "c2") == (3, 4)
    assert await inventory(database, a) == (10, 4, 5), "the failed statement wrote seats"
    assert (await booker.submit(Book(event.id, a, 1, customer_id="c2"))).qty == 1
    assert booker.stats.verified == 4, "section A was forgotten after the refusal"
    assert await tally(database, event.id, "c2") == (4, 4)
    await assert_consistent(database)


@POSTGRESQL_ONLY
async def test_a_database_restart_during_a_lull_costs_no_request(
    booker: BatchedBooker, database: Database
) -> None:
    """The committer keeps its connection under load; after a quiet second it takes a
    pinged one from the pool, so connections killed meanwhile are never used."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    await booker.submit(Book(event.id, s, 1))
    async with database.engine.connect() as conn:
        await conn.execute(text(TERMINATE_OUR_OTHER_SESSIONS))
    await asyncio.sleep(1.2)
    assert (await booker.submit(Book(event.id, s, 2))).qty == 2
    assert await inventory(database, s) == (10, 7, 3)


@POSTGRESQL_ONLY
async def test_a_connection_killed_under_load_fails_one_batch_cleanly(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one statement runs on asyncpg itself (db/driver.py): its errors must still
    become a clean 503 for the batch, with nothing written, and a fresh connection."""
    # "Under load": however slow this machine, the kept connection is not swapped out.
    monkeypatch.setattr(connections_module, "KEEP_CONNECTION_IDLE_SECONDS", 3600.0)
    event = await new_event(database, 10)
    s = event.sections[0].id
    await booker.submit(Book(event.id, s, 1))  # locked path: now remembered
    await booker.submit(Book(event.id, s, 1))  # one statement: connection kept
    assert booker.stats.verified == 1
    async with database.engine.connect() as conn:
        killed = await conn.execute(text(TERMINATE_OUR_OTHER_SESSIONS))
        assert killed.scalar_one() >= 1
    results = await book_all(booker, [Book(event.id, s, q) for q in (1, 2)])
    assert all(isinstance(r, DatabaseUnavailable) for r in results), results
    assert booker.stats.verified == 1, "the failed batch went through the one statement"
    assert await inventory(database, s) == (10, 8, 2), "a failed batch wrote seats"
    assert (await booker.submit(Book(event.id, s, 3))).qty == 3, "no fresh connection"
    assert await inventory(database, s) == (10, 5, 5)


@POSTGRESQL_ONLY
async def test_a_section_short_of_seats_writes_nothing_of_the_one_statement(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: when another process sold the seats a remembered batch draws from
    one section, the statement writes none of the batch (not even the other section's
    bookings), and the whole batch is decided again under lock: each decided once."""
    event = await new_event(database, 10, 10)
    a, b = event.sections[0].id, event.sections[1].id
    await book_all(booker, [Book(event.id, a, 1), Book(event.id, b, 1)])
    await DirectBooker(database, max_tickets_per_booking=10).submit(Book(event.id, b, 8))

    def locked_path_fails(conn, commands, now):  # type: ignore[no-untyped-def]
        raise OperationalError("SELECT", {}, Exception("connection lost"))

    monkeypatch.setattr(locked_module, "apply_commands", locked_path_fails)
    results = await book_all(booker, [Book(event.id, a, 2), Book(event.id, b, 3)])
    assert all(isinstance(r, DatabaseUnavailable) for r in results), results
    assert await inventory(database, a) == (10, 9, 1), "the statement wrote the other section"
    assert await inventory(database, b) == (10, 1, 9)
    monkeypatch.undo()
    results = await book_all(booker, [Book(event.id, a, 2), Book(event.id, b, 3)])
    assert isinstance(results[0], Booking)
    assert isinstance(results[1], InsufficientSeats)
    assert results[1].remaining == 1
    assert await inventory(database, a) == (10, 7, 3)
    assert await inventory(database, b) == (10, 1, 9)


@POSTGRESQL_ONLY
async def test_sales_of_another_process_that_leave_room_cost_no_lock(
    booker: BatchedBooker, database: Database
) -> None:
    """Several processes sell the same sections: what one remembers is behind the true
    count, but while the seats a batch takes are there, it is written in one statement
    on the true counts, and the section is remembered as the statement left it."""
    event = await new_event(database, 10, 10)
    a, b = event.sections[0].id, event.sections[1].id
    other_process = DirectBooker(database, max_tickets_per_booking=10)

    await warm(booker, event)  # remembered: 9 left in A
    await other_process.submit(Book(event.id, a, 4))  # 5 left; we remember 9
    results = await book_all(booker, [Book(event.id, a, 2), Book(event.id, a, 1)])
    assert all(isinstance(r, Booking) for r in results), results
    assert (booker.stats.verified, booker.stats.retried) == (2, 0)
    assert await inventory(database, a) == (10, 2, 8), "not written on the true counts"

    theirs = await other_process.submit(Book(event.id, b, 4))  # 6 left in B
    await warm(booker, event, 1)  # remembered: 5 left in B
    await other_process.submit(CancelBooking(theirs.id))  # 9 left; we remember 5
    assert (await booker.submit(Book(event.id, b, 1))).qty == 1  # 8 left
    # Remembered as the statement left it (8), not as decided here (4): from memory.
    assert (await booker.submit(Book(event.id, b, 6))).qty == 6
    assert (booker.stats.verified, booker.stats.retried) == (4, 0)
    assert await inventory(database, b) == (10, 2, 12)  # the cancelled 4 are still stored
    await assert_consistent(database)


ANSWER_DEADLINE_SECONDS = 10.0


async def answers_to(requests: list[asyncio.Task[Any]]) -> list[Any]:
    """Each request's answer (its result, or what it raised); fails if one never comes."""
    _, unanswered = await asyncio.wait(requests, timeout=ANSWER_DEADLINE_SECONDS)
    assert not unanswered, f"{len(unanswered)} of {len(requests)} requests were never answered"
    return [request.exception() or request.result() for request in requests]


async def assert_every_answer_kept_its_word(
    database: Database, database_url: str, event_id: str, answers: list[Any]
) -> None:
    """Never half-done: each booking answered is stored as answered, nothing else is
    stored, and `boxoffice check` finds every inventory invariant holding."""
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            select(bookings.c.id, bookings.c.qty).where(bookings.c.event_id == uuid.UUID(event_id))
        )
        stored = {str(row.id): row.qty for row in rows}
    answered = {a.id: a.qty for a in answers if isinstance(a, Booking)}
    assert stored == answered, "half-done: stored bookings differ from those answered"
    check = inventory_check(database_url)
    assert check.returncode == 0, check.stdout + check.stderr


async def until(condition: Callable[[], bool], failure: str) -> None:
    """Return once `condition()` holds; fail with `failure` past the deadline."""
    deadline = time.monotonic() + ANSWER_DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.01)


def the_committer() -> asyncio.Task[Any]:
    """The running booker's committer task (`BatchedBooker.start` names it)."""
    (committer,) = [t for t in asyncio.all_tasks() if t.get_name() == "boxoffice-committer"]
    return committer


async def test_stop_lets_the_batch_in_flight_finish(
    booker: BatchedBooker,
    database: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = await new_event(database, 10)
    s = event.sections[0].id
    held = hold_the_committer(monkeypatch, database_url)
    pending = asyncio.create_task(booker.submit(Book(event.id, s, 2)))
    await held.reached()
    stopping = asyncio.create_task(booker.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop() did not wait for the batch in flight"
    held.open()
    await asyncio.wait_for(stopping, ANSWER_DEADLINE_SECONDS)
    assert (await pending).qty == 2
    assert await inventory(database, s) == (10, 8, 2)


async def test_stop_answers_queued_requests_instead_of_dropping_them(
    booker: BatchedBooker,
    database: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests queued behind the batch in flight when stop() is called are committed
    and answered, as one more batch, before the committer stops; a request arriving
    once stop() has begun is refused, not queued."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    held = hold_the_committer(monkeypatch, database_url)
    in_flight = asyncio.create_task(booker.submit(Book(event.id, s, 1)))
    await held.reached()
    # Four more queue up behind it (a task's submit() queues before it first waits).
    queued = [asyncio.create_task(booker.submit(Book(event.id, s, q))) for q in (2, 3, 5, 4)]
    await asyncio.sleep(0)
    stopping = asyncio.create_task(booker.stop())
    await asyncio.sleep(0)
    with pytest.raises(DatabaseUnavailable, match="not running"):
        await booker.submit(Book(event.id, s, 1))
    held.open()
    await asyncio.wait_for(stopping, ANSWER_DEADLINE_SECONDS)
    answers = await answers_to([in_flight, *queued])
    assert [type(a) for a in answers] == [
        Booking,
        Booking,
        Booking,
        InsufficientSeats,  # 5 of the 4 left
        Booking,
    ], answers
    assert (booker.stats.batches, booker.stats.largest) == (2, 4), "not queued behind it"
    await assert_every_answer_kept_its_word(database, database_url, event.id, answers)
    assert await inventory(database, s) == (10, 0, 10)


@BOTH_SQLITE_WRITERS
async def test_stop_past_its_timeout_rolls_back_the_batch_in_flight_and_fails_the_queue(
    booker: BatchedBooker,
    database: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its timeout, stop() cancels the batch in flight and answers it, and every
    request queued behind it, 503 (`DatabaseUnavailable`), which says nothing was
    written: so the transaction must roll back, even on SQLite's writer (a process
    or a thread), which cannot be interrupted and is told to give up instead."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    held = hold_the_committer(monkeypatch, database_url)
    monkeypatch.setattr(batched_module, "STOP_TIMEOUT_SECONDS", 0.2)
    in_flight = asyncio.create_task(booker.submit(Book(event.id, s, 1)))
    await held.reached()
    queued = [asyncio.create_task(booker.submit(Book(event.id, s, q))) for q in (2, 3)]
    await asyncio.sleep(0)
    committer = the_committer()
    stopping = asyncio.create_task(booker.stop())
    await until(lambda: committer.cancelling() > 0 or committer.done(), "stop() never gave up")
    held.open()  # the batch's work ends only now, after its caller gave up
    await asyncio.wait_for(stopping, ANSWER_DEADLINE_SECONDS)
    answers = await answers_to([in_flight, *queued])
    assert all(isinstance(a, DatabaseUnavailable) for a in answers), answers
    if database.dialect == "sqlite":  # whatever the writer still had to do is done
        await database.run_on_writer(nothing)
    await assert_every_answer_kept_its_word(database, database_url, event.id, answers)
    assert await inventory(database, s) == (10, 10, 0), "answered 503 but committed"
    more = Book(event.id, s, 1)
    await DirectBooker(database, max_tickets_per_booking=10).submit(more)  # the lock is free


async def test_a_dead_committer_answers_instead_of_hanging(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = await new_event(database, 10)

    async def bug(self, batch):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the committer")

    monkeypatch.setattr(BatchedBooker, "_commit", bug)
    request = Book(event.id, event.sections[0].id, 1)
    with pytest.raises(DatabaseUnavailable):
        await asyncio.wait_for(booker.submit(request), 5)
    with pytest.raises(DatabaseUnavailable):
        await asyncio.wait_for(booker.submit(request), 5)


@SQLITE_ONLY
async def test_another_writer_past_the_busy_timeout_fails_the_batch_cleanly(
    database_url: str, database: Database
) -> None:
    """SQLite's batches run on the writer, with a blocking connection: a lock held
    by another process past the busy timeout is a 503 for the whole batch, nothing is
    written, and the committer books again once the lock is gone."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    impatient = Database.from_url(async_database_url(database_url), limits=Limits(busy_timeout=0.2))
    path = BatchedBooker(impatient, max_tickets_per_booking=10)
    await path.start()
    other_process = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        other_process.execute("BEGIN IMMEDIATE")
        results = await book_all(path, [Book(event.id, s, q) for q in (1, 2, 3)])
        assert all(isinstance(r, DatabaseUnavailable) for r in results), results
        other_process.execute("ROLLBACK")
        assert (await path.submit(Book(event.id, s, 4))).qty == 4
    finally:
        other_process.close()
        await path.stop()
        await impatient.dispose()
    assert await inventory(database, s) == (10, 6, 4)


def test_active_holds_placed_here_are_decided_from_memory_until_they_settle_or_expire() -> None:
    from datetime import timedelta

    from boxoffice.booking.remembered import Remembered
    from boxoffice.domain.commands import ConfirmHold, ReleaseHold
    from boxoffice.domain.model import Hold, HoldItem, Section

    remembered = Remembered()
    event, section, other = (str(uuid.uuid4()) for _ in range(3))
    remembered.remember({section: Section(section, event, "S", 1, 5, 3, 2)})
    hold = Hold(
        str(uuid.uuid4()), event, "c", (HoldItem(section, 2, 1),), "active",
        NOW + timedelta(minutes=5), NOW,
    )  # fmt: skip
    assert remembered.inventory_for([ConfirmHold(hold.id)], NOW) is None  # not placed here
    remembered.remember_holds([hold], [])
    found = remembered.inventory_for([ConfirmHold(hold.id), ReleaseHold(hold.id)], NOW)
    assert found is not None
    assert found.holds == {hold.id: hold}
    assert remembered.inventory_for([ConfirmHold(hold.id)], hold.expires_at) is None  # expired
    stranger = Hold(other, event, None, (HoldItem(str(uuid.uuid4()), 1, 1),), "active",
                    NOW + timedelta(minutes=5), NOW)  # fmt: skip
    remembered.remember_holds([stranger], [])
    assert remembered.inventory_for([ConfirmHold(other)], NOW) is None  # section unknown
    remembered.remember_holds([], [hold.settled("confirmed", NOW)])
    assert remembered.inventory_for([ConfirmHold(hold.id)], NOW) is None  # settled: forgotten


async def test_a_checkout_placed_here_is_confirmed_in_one_statement(
    booker: BatchedBooker, database: Database
) -> None:
    """The hold and its confirmation both go the one-statement way once the section is
    remembered; a hold released by another process meanwhile is found out by the
    statement's checks, and the confirmation is decided again under lock."""
    from boxoffice.domain.commands import ConfirmHold, HoldItemRequest, PlaceHold, ReleaseHold
    from boxoffice.domain.errors import HoldNotActive

    event = await new_event(database, 10)
    s = event.sections[0].id
    await warm(booker, event)  # 9 left, remembered
    place = PlaceHold(event.id, (HoldItemRequest(s, 2),), 600)
    hold = await booker.submit(place)
    confirmed = await booker.submit(ConfirmHold(hold.id, "pi_1"))  # type: ignore[union-attr]
    assert confirmed.hold.status == "confirmed"  # type: ignore[union-attr]
    if database.dialect == "postgresql":
        assert (booker.stats.verified, booker.stats.retried) == (2, 0)

    other_process = DirectBooker(database, max_tickets_per_booking=10)
    stale = await booker.submit(place)
    await other_process.submit(ReleaseHold(stale.id))  # type: ignore[union-attr]
    with pytest.raises(HoldNotActive):
        await booker.submit(ConfirmHold(stale.id))  # type: ignore[union-attr]
    if database.dialect == "postgresql":
        assert booker.stats.retried == 1, "decided on the remembered hold"
    assert await inventory(database, s) == (10, 7, 3)


@POSTGRESQL_ONLY
async def test_a_confirmation_committed_but_unanswered_is_replayed_not_decided_from_memory(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection lost during COMMIT (a failover) leaves a batch's outcome unknown. Its
    retry must not be decided from memory, where the hold is still active while its
    section, read again since, already counts the seats as sold: that contradiction was
    a 500 in the failover drill. It goes the locked way and replays the stored answer."""
    import asyncpg

    from boxoffice.booking import remembered as remembered_module
    from boxoffice.domain.commands import ConfirmHold, HoldItemRequest, Idempotency, PlaceHold

    event = await new_event(database, 10)
    s = event.sections[0].id
    await warm(booker, event)  # 9 left, remembered
    hold = await booker.submit(PlaceHold(event.id, (HoldItemRequest(s, 2),), 600))
    real_statement = remembered_module._WRITE_IF_UNCHANGED

    class CommitsThenLosesTheAnswer:
        async def fetch(self, conn: Any, params: Any) -> list[Any]:
            await real_statement.fetch(conn, params)
            monkeypatch.setattr(remembered_module, "_WRITE_IF_UNCHANGED", real_statement)
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    monkeypatch.setattr(remembered_module, "_WRITE_IF_UNCHANGED", CommitsThenLosesTheAnswer())
    confirm = ConfirmHold(
        hold.id,  # type: ignore[union-attr]
        "pi_1",
        idempotency=Idempotency("", "confirm-1", "fingerprint"),
    )
    with pytest.raises(DatabaseUnavailable):
        await booker.submit(confirm)
    await booker.submit(Book(event.id, s, 1))  # the section is read again, under lock
    replayed = await booker.submit(confirm)
    assert replayed.hold.status == "confirmed"  # type: ignore[union-attr]
    assert await inventory(database, s) == (10, 6, 4)


@POSTGRESQL_ONLY
async def test_a_hold_placed_by_another_process_is_confirmed_from_memory(
    booker: BatchedBooker, database: Database
) -> None:
    """With several processes a checkout's confirmation often reaches one that did not
    place its hold. The read that learns the hold's event brings the whole hold, and
    the confirmation is decided from memory, the write checking that it is still active;
    one settled elsewhere meanwhile is decided under lock."""
    from boxoffice.domain.commands import (
        Confirmation,
        ConfirmHold,
        HoldItemRequest,
        PlaceHold,
        ReleaseHold,
    )
    from boxoffice.domain.errors import HoldNotActive

    event = await new_event(database, 10)
    s = event.sections[0].id
    other_process = DirectBooker(database, max_tickets_per_booking=10)
    theirs = [
        await other_process.submit(PlaceHold(event.id, (HoldItemRequest(s, q),), 600, "c1"))
        for q in (2, 3)
    ]
    await warm(booker, event)  # remembered as it is: 4 left, 5 held
    confirmed = await booker.submit(ConfirmHold(theirs[0].id, "pi_1"))
    assert isinstance(confirmed, Confirmation)
    assert [b.qty for b in confirmed.bookings] == [2]
    assert (booker.stats.verified, booker.stats.retried) == (1, 0), "not from memory"

    await booker.events_of.resolve(ConfirmHold(theirs[1].id))  # read, and remembered
    await other_process.submit(ReleaseHold(theirs[1].id))  # settled behind our back
    with pytest.raises(HoldNotActive):
        await booker.submit(ConfirmHold(theirs[1].id, "pi_2"))
    assert booker.stats.retried == 1, "the released hold was not checked by the write"
    assert await inventory(database, s) == (10, 7, 3)
    await assert_consistent(database)


@POSTGRESQL_ONLY
async def test_a_hold_the_remembered_section_does_not_count_is_decided_under_lock(
    booker: BatchedBooker, database: Database
) -> None:
    """Placed by another process after this one last wrote its section: the copy has
    none of its seats held, which must not fail the batch (it was a 503)."""
    from boxoffice.domain.commands import Confirmation, ConfirmHold, HoldItemRequest, PlaceHold

    event = await new_event(database, 10)
    s = event.sections[0].id
    await warm(booker, event)  # remembered: 9 left, none held
    other_process = DirectBooker(database, max_tickets_per_booking=10)
    hold = await other_process.submit(PlaceHold(event.id, (HoldItemRequest(s, 2),), 600))
    disagreed = locked_batches("seats_disagree")
    confirmed = await booker.submit(ConfirmHold(hold.id))
    assert isinstance(confirmed, Confirmation)
    assert (booker.stats.verified, booker.stats.retried) == (0, 1)
    assert locked_batches("seats_disagree") == disagreed + 1
    assert await inventory(database, s) == (10, 7, 3)


@POSTGRESQL_ONLY
async def test_a_deadlocked_statement_is_decided_again_under_lock(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL may end the one statement as a deadlock's victim (it locks a capped
    customer's tally after the sections and holds): nothing was written, so the
    batch goes the locked way instead of failing."""
    import asyncpg

    from boxoffice.booking import remembered as remembered_module

    event = await new_event(database, 10)
    s = event.sections[0].id
    await warm(booker, event)

    class DeadlockVictim:
        async def fetch(self, conn: Any, params: Any) -> list[Any]:
            raise asyncpg.DeadlockDetectedError("deadlock detected")

    monkeypatch.setattr(remembered_module, "_WRITE_IF_UNCHANGED", DeadlockVictim())
    results = await book_all(booker, [Book(event.id, s, 2), Book(event.id, s, 1)])
    assert all(isinstance(r, Booking) for r in results), results
    assert (booker.stats.verified, booker.stats.retried) == (0, 2)
    assert await inventory(database, s) == (10, 6, 4)


# Seats sold (n < 0: given back) outside any booking row, as another process might.
SOLD_OUTSIDE = text(
    "UPDATE sections SET remaining = remaining - :n, sold = sold + :n WHERE id = CAST(:id AS uuid)"
)


async def booked_while_sold_outside(
    booker: BatchedBooker, database: Database, book: Book, sold: int
) -> asyncio.Future[Any]:
    """`book`, submitted while another transaction holds its section's row having sold
    `sold` seats there, which it commits once the statement under test waits for the row
    (PostgreSQL shows it blocked): the statement's snapshot is from before that commit."""
    blocked = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    other = await database.engine.connect()
    try:
        await other.execute(SOLD_OUTSIDE, {"id": book.section_id, "n": sold})
        pid = (await other.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        booking = asyncio.ensure_future(booker.submit(book))
        deadline = time.monotonic() + 10
        async with database.engine.connect() as watcher:
            # Each poll its own transaction: PostgreSQL keeps what pg_stat_activity showed
            # until the transaction ends, so a backend the booker opens later would never
            # be seen (CI failed this way once).
            await watcher.execution_options(isolation_level="AUTOCOMMIT")
            while not (await watcher.execute(blocked, {"pid": pid})).scalar_one():
                assert time.monotonic() < deadline, "the statement never waited for the row"
                await asyncio.sleep(0.01)
        await other.commit()
    finally:
        await other.close()
    return booking


@POSTGRESQL_ONLY
async def test_a_sale_committed_while_the_statement_waits_for_its_lock_is_counted(
    booker: BatchedBooker, database: Database
) -> None:
    """Another transaction holds the section's row when the statement starts, and
    commits while it waits: the statement adds to the row as that commit left it,
    not to the snapshot it started with (READ COMMITTED re-reads a locked row)."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    await warm(booker, event)  # remembered: 9 left
    booking = await booked_while_sold_outside(booker, database, Book(event.id, s, 3), 5)
    assert (await booking).qty == 3
    assert booker.stats.verified == 1
    assert await inventory(database, s) == (10, 1, 4)  # 5 sold outside any booking row


@POSTGRESQL_ONLY
async def test_a_sale_committed_while_the_statement_waits_that_leaves_too_few_seats_stops_it(
    booker: BatchedBooker, database: Database
) -> None:
    """As above, but the commit leaves fewer seats than the batch draws: the statement's
    check must see the row as committed (not as its snapshot had it) and write nothing;
    the batch is decided again under lock."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    await warm(booker, event)  # remembered: 9 left
    before = batch_paths()
    booking = await booked_while_sold_outside(booker, database, Book(event.id, s, 3), 8)
    with pytest.raises(InsufficientSeats):
        await booking
    assert (booker.stats.verified, booker.stats.retried) == (0, 1)
    assert paths_since(before) == {("locked", "stale"): 1}
    assert await inventory(database, s) == (10, 1, 1)  # 8 sold outside any booking row


@POSTGRESQL_ONLY
async def test_a_write_the_rows_refuse_is_decided_again_under_lock(
    booker: BatchedBooker, database: Database
) -> None:
    """Memory that is wrong in a way the statement's own check cannot see (here a hold
    remembered with more seats than it has) makes a write the CHECK constraints refuse:
    nothing is written, the hints are forgotten, and the batch is decided under lock,
    instead of failing and being tried again one command at a time."""
    import dataclasses

    import structlog

    from boxoffice.domain.commands import Confirmation, ConfirmHold, HoldItemRequest, PlaceHold

    event = await new_event(database, 10)
    s = event.sections[0].id
    hold = await booker.submit(PlaceHold(event.id, (HoldItemRequest(s, 2),), 600))
    assert (booker.stats.verified, booker.stats.retried) == (0, 0)  # learnt under lock
    remembered = booker._remembered
    assert remembered is not None
    wrong = dataclasses.replace(hold, items=(dataclasses.replace(hold.items[0], qty=5),))
    remembered.remember_holds([wrong], [])
    section = remembered._sections[s].copy()  # 8 left, 2 held: counted as 5 and 5
    section.remaining, section.held = 5, 5
    remembered.remember({s: section})
    with structlog.testing.capture_logs() as logs:
        confirmed = await booker.submit(ConfirmHold(hold.id, "pi_1"))
    assert isinstance(confirmed, Confirmation)
    assert [b.qty for b in confirmed.bookings] == [2]
    assert (booker.stats.verified, booker.stats.retried) == (0, 1), "not decided under lock"
    refused = [entry for entry in logs if entry["event"] == "one_statement_refused_by_check"]
    assert [entry["constraint"] for entry in refused] == ["ck_sections_seats_add_up"]
    assert "Failing row" in refused[0]["detail"]
    assert await inventory(database, s) == (10, 8, 2)
    await assert_consistent(database)


@POSTGRESQL_ONLY
async def test_seats_given_back_while_the_statement_waits_for_its_lock_are_counted(
    booker: BatchedBooker, database: Database
) -> None:
    """The statement's snapshot has too few seats; a transaction holding the row gives
    seats back and commits while the statement waits for its lock. The statement must
    add to the row as it locked it: PostgreSQL checks the CHECKs on the row made from
    the snapshot's copy before it notices the change, so adding to that copy failed
    ck_sections_seats_add_up (found by the full sale, a few times a run)."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    await warm(booker, event)  # remembered: 9 left
    async with database.engine.begin() as conn:
        await conn.execute(SOLD_OUTSIDE, {"id": s, "n": 7})  # 2 left, memory says 9
    # 7 left once given back, while the statement waits.
    booking = await booked_while_sold_outside(booker, database, Book(event.id, s, 3), -5)
    assert (await booking).qty == 3
    assert (booker.stats.verified, booker.stats.retried) == (1, 0), "not in one statement"
    assert await inventory(database, s) == (10, 4, 4)  # 2 sold outside any booking row
