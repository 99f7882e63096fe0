"""How many round trips a sale's writes and reads make on PostgreSQL.

Under a sale's load every round trip waits its turn in a busy event loop (the server's
own histogram showed a hold's time going there, docs/performance.md), so their number is
what a purchase's latency is made of. These pin it down from PostgreSQL's statement log,
and check that the statements that save round trips keep their promises under races.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from boxoffice.booking import BatchedBooker
from boxoffice.booking.events_of import EventsOf
from boxoffice.config import async_database_url
from boxoffice.db.database import Database
from boxoffice.domain.commands import Confirmation, ConfirmHold, HoldItemRequest, PlaceHold
from boxoffice.domain.model import EventSpec, Hold, SectionSpec
from boxoffice.services import holds as hold_service
from boxoffice.services.clock import FakeClock
from boxoffice.services.events import create_event
from boxoffice.services.line_joiner import LineJoiner
from boxoffice.services.waiting_room import Joining
from tests.support.statement_log import Transactions

POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
TTL = 600


def _ours(seen: Transactions, word: str) -> list[list[str]]:
    """The transactions that ran a statement containing `word`."""
    return [tx for tx in seen.done if any(word in sql for sql in tx)]


@POSTGRESQL_ONLY
async def test_a_burst_of_joins_is_one_statement_on_its_own(
    database: Database, traced: Callable[[], Transactions]
) -> None:
    clock = FakeClock()
    event = await create_event(database, EventSpec("Show", (SectionSpec("A", 1000, 10),)), clock())
    joiner = LineJoiner(database)
    try:
        first = await asyncio.gather(
            *(joiner.join(Joining(event.id, f"c{n}", 100 + n, clock())) for n in range(20))
        )
        again = await asyncio.gather(
            *(joiner.join(Joining(event.id, f"c{n}", 999_000 + n, clock())) for n in range(20))
        )
    finally:
        await joiner.stop()
    assert [key for key, _ in first] == [100 + n for n in range(20)]
    assert again == first, "a customer joining again keeps the place it has"
    seen = traced()
    joins = _ours(seen, "INSERT INTO queue_places")
    assert 2 <= len(joins) <= 40
    assert all(tx == [tx[0]] for tx in joins), "a join batch is one statement"
    assert seen.alone("INSERT INTO queue_places"), "... on its own: no BEGIN, no COMMIT"


@POSTGRESQL_ONLY
async def test_two_processes_joining_the_same_customers_in_opposite_orders_agree(
    database_url: str, database: Database
) -> None:
    """The join's upsert locks each place it finds: two processes taking the same
    customers in opposite orders would deadlock if rows were not taken in key order."""
    clock = FakeClock()
    event = await create_event(database, EventSpec("Show", (SectionSpec("A", 1000, 10),)), clock())
    other_database = Database.from_url(async_database_url(database_url))
    ours, theirs = LineJoiner(database), LineJoiner(other_database)
    customers = [f"c{n:03}" for n in range(60)]
    try:
        for round_ in range(5):
            forward = [
                ours.join(Joining(event.id, c, round_ * 1000 + n, clock()))
                for n, c in enumerate(customers)
            ]
            backward = [
                theirs.join(Joining(event.id, c, 500_000 + round_ * 1000 + n, clock()))
                for n, c in reversed(list(enumerate(customers)))
            ]
            results = await asyncio.gather(*forward, *backward)
            mine = dict(zip(customers, results[: len(customers)], strict=True))
            yours = dict(zip(reversed(customers), results[len(customers) :], strict=True))
            assert mine == yours, "one place per customer, whichever process asked"
    finally:
        await ours.stop()
        await theirs.stop()
        await other_database.dispose()


@POSTGRESQL_ONLY
async def test_a_locked_checkout_batch_of_capped_customers_reads_in_few_statements(
    database: Database, traced: Callable[[], Transactions]
) -> None:
    """A hold of a capped customer, then its confirmation from another process (which
    does not remember the hold, so locks): sections locked, holds with their items read,
    tallies made-or-locked, each in one statement."""
    clock = FakeClock()
    event = await create_event(
        database, EventSpec("Capped", (SectionSpec("A", 1000, 10),), 4), clock()
    )
    section = event.sections[0].id
    placing = BatchedBooker(database, max_tickets_per_booking=10, clock=clock)
    confirming = BatchedBooker(database, max_tickets_per_booking=10, clock=clock)
    await placing.start()
    await confirming.start()
    try:
        hold = await placing.submit(PlaceHold(event.id, (HoldItemRequest(section, 2),), TTL, "c1"))
        assert isinstance(hold, Hold)
        confirmed = await confirming.submit(ConfirmHold(hold.id, "pay"))
        assert isinstance(confirmed, Confirmation)
    finally:
        await confirming.stop()
        await placing.stop()
    placed, settled = _ours(traced(), "s_new AS")  # the batches' writes, in order
    # sections locked, the tally made or locked, the batch written
    assert len(placed) == 3, placed
    assert "ON CONFLICT" in placed[1]
    assert "RETURNING" in placed[1]
    # its sections (found through the hold) locked, the hold with its items, its tally, the write
    assert len(settled) == 4, settled


@POSTGRESQL_ONLY
async def test_reads_on_a_purchase_path_run_on_their_own(
    database: Database, traced: Callable[[], Transactions]
) -> None:
    """The hold caps' read and the event of a hold: one statement each, no BEGIN."""
    clock = FakeClock()
    event = await create_event(database, EventSpec("Show", (SectionSpec("A", 1000, 10),)), clock())
    booker = BatchedBooker(database, max_tickets_per_booking=10, clock=clock)
    await booker.start()
    try:
        hold = await booker.submit(
            PlaceHold(event.id, (HoldItemRequest(event.sections[0].id, 1),), TTL, "c1")
        )
        assert isinstance(hold, Hold)
    finally:
        await booker.stop()
    records = await hold_service.hold_records(database, ["c1", "c2"], clock() + timedelta(0))
    assert [record.active for record in records] == [1, 0]
    resolved = await EventsOf(database).resolve(ConfirmHold(hold.id))
    assert isinstance(resolved, ConfirmHold)
    assert resolved.event_id == event.id
    seen = traced()
    assert seen.alone("count(*) FILTER (WHERE holds.status")  # the hold caps' read
    assert seen.alone("SELECT holds.id, holds.event_id \n\tFROM holds \n\tWHERE holds.id IN")


@POSTGRESQL_ONLY
async def test_behind_a_transaction_pooler_a_lone_statement_keeps_its_transaction(
    database_url: str, database: Database, traced: Callable[[], Transactions]
) -> None:
    """Behind pgbouncer in transaction mode the session settings (statement and lock
    timeouts) ride on each BEGIN: a statement run on its own would go without them."""
    pooled = Database.from_url(async_database_url(database_url), pooler="transaction")
    try:
        records = await hold_service.hold_records(pooled, ["c9"], FakeClock()())
    finally:
        await pooled.dispose()
    assert [record.active for record in records] == [0]
    seen = traced()
    found = [
        explicit
        for statements, explicit in zip(seen.done, seen.explicit, strict=True)
        if any("count(*) FILTER (WHERE holds.status" in sql for sql in statements)
    ]
    assert found == [True]
