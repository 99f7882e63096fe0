"""The booking path against real databases (each test runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from boxoffice.booking import Booker, make_booker
from boxoffice.booking import locked as locked_module
from boxoffice.db.database import Database
from boxoffice.db.tables import bookings, sections
from boxoffice.domain.commands import Book
from boxoffice.domain.errors import (
    EventNotFound,
    InsufficientSeats,
    InvalidRequest,
    SectionNotFound,
)
from boxoffice.domain.model import Event, EventSpec, SectionSpec
from boxoffice.services.events import create_event, get_event
from boxoffice.services.unit_of_work import UnitOfWork
from tests.support.writer_faults import FailedBeforeCommit, reserve_then_raise


async def new_event(database: Database, *capacities: int) -> Event:
    return await create_event(
        database,
        EventSpec(
            name="Concert",
            sections=tuple(SectionSpec(f"S{i}", 2500, c) for i, c in enumerate(capacities)),
        ),
        datetime.now(UTC),
    )


async def inventory(database: Database, section_id: str) -> tuple[int, int, int]:
    """(capacity, remaining, seats in stored bookings) for one section."""
    ident = uuid.UUID(section_id)
    async with database.engine.connect() as conn:
        capacity, remaining = (
            await conn.execute(
                select(sections.c.capacity, sections.c.remaining).where(sections.c.id == ident)
            )
        ).one()
        booked = (
            await conn.execute(
                select(func.coalesce(func.sum(bookings.c.qty), 0)).where(
                    bookings.c.section_id == ident
                )
            )
        ).scalar_one()
    return capacity, remaining, int(booked)


NewBooker = Callable[..., Awaitable[Booker]]


@pytest.fixture(params=["direct", "batched"])
async def new_booker(
    request: pytest.FixtureRequest, database: Database
) -> AsyncIterator[NewBooker]:
    """Makes started bookers of each strategy (and, via `database`, on each database).

    One booker per limit and test, like one per server process: a batched booker
    keeps its own connections while it runs.
    """
    made: dict[int, Booker] = {}

    async def make(max_tickets: int = 10) -> Booker:
        if max_tickets not in made:
            path = make_booker(request.param, database, max_tickets_per_booking=max_tickets)
            await path.start()
            made[max_tickets] = path
        return made[max_tickets]

    yield make
    for path in made.values():
        await path.stop()


async def test_booking_takes_seats_and_records_the_booking(
    database: Database, new_booker: NewBooker
) -> None:
    event = await new_event(database, 5)
    section = event.sections[0]
    booking = await (await new_booker()).submit(Book(event.id, section.id, 3))
    assert (booking.qty, booking.unit_price_cents, booking.total_price_cents) == (3, 2500, 7500)
    assert booking.status == "confirmed"
    assert await inventory(database, section.id) == (5, 2, 3)


async def test_insufficient_seats_changes_nothing(
    database: Database, new_booker: NewBooker
) -> None:
    event = await new_event(database, 5)
    section = event.sections[0]
    await (await new_booker()).submit(Book(event.id, section.id, 4))
    with pytest.raises(InsufficientSeats) as refused:
        await (await new_booker()).submit(Book(event.id, section.id, 2))
    assert refused.value.remaining == 1
    assert await inventory(database, section.id) == (5, 1, 4)


async def test_unknown_event_and_foreign_section_are_not_found(
    database: Database, new_booker: NewBooker
) -> None:
    first = await new_event(database, 5)
    other = await new_event(database, 5)
    with pytest.raises(EventNotFound):
        await (await new_booker()).submit(Book(str(uuid.uuid4()), first.sections[0].id, 1))
    with pytest.raises(EventNotFound):
        await (await new_booker()).submit(Book("not-an-id", first.sections[0].id, 1))
    with pytest.raises(SectionNotFound):
        await (await new_booker()).submit(Book(first.id, other.sections[0].id, 1))
    with pytest.raises(SectionNotFound):
        await (await new_booker()).submit(Book(first.id, "nope", 1))
    assert await inventory(database, other.sections[0].id) == (5, 5, 0)


async def test_quantity_over_the_limit_is_refused_before_the_database(
    database: Database, new_booker: NewBooker
) -> None:
    event = await new_event(database, 50)
    with pytest.raises(InvalidRequest):
        await (await new_booker(4)).submit(Book(event.id, event.sections[0].id, 5))
    assert await inventory(database, event.sections[0].id) == (50, 50, 0)


async def test_check_constraint_refuses_overselling_whatever_the_code_does(
    database: Database,
) -> None:
    event = await new_event(database, 2)
    ident = uuid.UUID(event.sections[0].id)
    with pytest.raises(IntegrityError):
        async with UnitOfWork(database, write=True) as uow:
            await uow.conn.execute(
                update(sections).where(sections.c.id == ident).values(remaining=-1)
            )
            await uow.commit()
    with pytest.raises(IntegrityError):
        async with UnitOfWork(database, write=True) as uow:
            await uow.conn.execute(
                update(sections).where(sections.c.id == ident).values(remaining=3)
            )
            await uow.commit()
    with pytest.raises(IntegrityError):  # a seat taken that is neither held nor sold: a leak
        async with UnitOfWork(database, write=True) as uow:
            await uow.conn.execute(
                update(sections).where(sections.c.id == ident).values(remaining=1)
            )
            await uow.commit()
    assert await inventory(database, event.sections[0].id) == (2, 2, 0)


async def test_database_refuses_a_booking_for_another_events_section(database: Database) -> None:
    first = await new_event(database, 2)
    other = await new_event(database, 2)
    with pytest.raises(IntegrityError):
        async with UnitOfWork(database, write=True) as uow:
            await uow.conn.execute(
                insert(bookings),
                [
                    {
                        "id": uuid.uuid4(),
                        "event_id": uuid.UUID(first.id),
                        "section_id": uuid.UUID(other.sections[0].id),
                        "qty": 1,
                        "unit_price_cents": 1,
                        "total_price_cents": 1,
                        "status": "confirmed",
                        "created_at": datetime.now(UTC),
                    }
                ],
            )
            await uow.commit()


async def test_an_exception_between_the_writes_and_the_commit_rolls_all_of_it_back(
    database: Database, new_booker: NewBooker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original wrote the decrement and the booking separately; here they share a commit.

    A rollback test, on both strategies and both databases (the locked transaction:
    a fresh booker remembers no section): the seats are taken and the booking
    inserted (the fault reads both back inside the transaction), then an exception
    comes before COMMIT, and nothing of it may remain. Real crashes (kill -9) are
    tested with real processes: `test_sqlite_writer.py` kills SQLite's writer
    mid-batch, `tests/e2e/test_concurrency.py` every server process under load.
    """
    event = await new_event(database, 5)
    section = event.sections[0]
    monkeypatch.setattr(locked_module, "apply_commands", reserve_then_raise)
    with pytest.raises(FailedBeforeCommit) as failure:
        await (await new_booker()).submit(Book(event.id, section.id, 2))
    assert (failure.value.remaining, failure.value.booked) == (3, 2), "the writes were not made"
    monkeypatch.undo()
    assert await inventory(database, section.id) == (5, 5, 0), "not rolled back"


async def test_concurrent_bookings_in_one_process_never_oversell(
    database: Database, new_booker: NewBooker
) -> None:
    event = await new_event(database, 97)
    section = event.sections[0]
    rng = random.Random(7)
    wanted = [rng.randint(1, 4) for _ in range(120)]
    path = await new_booker()

    async def attempt(qty: int) -> tuple[int, bool]:
        try:
            await path.submit(Book(event.id, section.id, qty))
            return qty, True
        except InsufficientSeats:
            return qty, False

    results = await asyncio.gather(*(attempt(qty) for qty in wanted))
    booked = sum(qty for qty, ok in results if ok)
    capacity, remaining, stored = await inventory(database, section.id)
    assert remaining >= 0
    assert booked == stored == capacity - remaining
    assert all(qty > remaining for qty, ok in results if not ok)
    assert remaining < min(wanted), "seats left although a request would have fit"


async def test_get_event_reports_live_remaining(database: Database, new_booker: NewBooker) -> None:
    event = await new_event(database, 5, 7)
    await (await new_booker()).submit(Book(event.id, event.sections[1].id, 2))
    fresh = await get_event(database, event.id, datetime.now(UTC))
    assert [(s.name, s.remaining) for s in fresh.sections] == [("S0", 5), ("S1", 5)]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    capacities=st.lists(st.integers(1, 8), min_size=1, max_size=3),
    asks=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 5)), max_size=25),
)
async def test_database_matches_the_inventory_model(
    database: Database, new_booker: NewBooker, capacities: list[int], asks: list[tuple[int, int]]
) -> None:
    """Property: any sequence of bookings leaves the database exactly where the model says."""
    event = await new_event(database, *capacities)
    model = list(capacities)
    for index, qty in asks:
        index %= len(capacities)
        section = event.sections[index]
        try:
            await (await new_booker()).submit(Book(event.id, section.id, qty))
            assert qty <= model[index]
            model[index] -= qty
        except InsufficientSeats as refused:
            assert qty > model[index]
            assert refused.remaining == model[index]
    for index, section in enumerate(event.sections):
        capacity, remaining, booked = await inventory(database, section.id)
        assert remaining == model[index]
        assert remaining + booked == capacity
