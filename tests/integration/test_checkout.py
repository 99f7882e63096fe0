"""Holds, confirmations, releases, cancellations, idempotency and customer caps, through the
real booking path on SQLite and PostgreSQL, with time moved by a fake clock (no sleeping).

Every test ends by checking the invariant for every section (capacity = remaining +
held + sold, each count matching the stored holds and bookings) and that the audit
trail rebuilds the stored counts.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from boxoffice.booking import Booker, make_booker
from boxoffice.booking.sweeper import Sweeper
from boxoffice.db.database import Database
from boxoffice.db.tables import sections
from boxoffice.domain.access import OPEN_ACCESS
from boxoffice.domain.commands import (
    Book,
    CancelBooking,
    Confirmation,
    ConfirmHold,
    HoldItemRequest,
    Idempotency,
    PlaceHold,
    Released,
    ReleaseHold,
)
from boxoffice.domain.errors import (
    CustomerLimitExceeded,
    EventNotFound,
    HoldExpired,
    HoldNotActive,
    HoldNotFound,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InsufficientSeats,
    SectionNotFound,
)
from boxoffice.domain.model import Booking, Event, EventSpec, Hold, SectionSpec
from boxoffice.services.clock import FakeClock
from boxoffice.services.events import create_event, get_event
from boxoffice.services.holds import get_hold
from boxoffice.services.inventory_check import check_inventory

TTL = 600


@pytest.fixture
def sqlite_writer() -> str:
    """SQLite's writer on a thread: a writer process cost each of these tests a second to
    start. The same commands and refusals cross the writer process's pipe in
    test_checkout_states.py, and every e2e server (test_checkout_processes.py) runs one."""
    return "thread"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["batched", "direct"])
async def booker(
    request: pytest.FixtureRequest, database: Database, clock: FakeClock
) -> AsyncIterator[Booker]:
    made = make_booker(request.param, database, max_tickets_per_booking=10, clock=clock)
    await made.start()
    yield made
    await made.stop()


async def new_event(
    database: Database, clock: FakeClock, *capacities: int, cap: int | None = None
) -> Event:
    return await create_event(
        database,
        EventSpec(
            "Concert",
            tuple(SectionSpec(f"S{i}", 1000 + i, c) for i, c in enumerate(capacities)),
            max_per_customer=cap,
        ),
        clock(),
    )


def hold_of(
    event: Event,
    *qtys: int,
    customer: str | None = None,
    ttl: int = TTL,
    idempotency: Idempotency | None = None,
) -> PlaceHold:
    return PlaceHold(
        event.id,
        tuple(HoldItemRequest(s.id, q) for s, q in zip(event.sections, qtys, strict=False) if q),
        ttl,
        customer,
        idempotency,
    )


async def seats(database: Database, clock: FakeClock, event: Event) -> list[tuple[int, int, int]]:
    """(remaining, held, sold) per section, as any reader sees them now."""
    fresh = await get_event(database, event.id, clock())
    return [(s.remaining, s.held, s.sold) for s in fresh.sections]


async def assert_consistent(database: Database) -> None:
    """Every inventory invariant holds (`boxoffice check`: counts add up, match the stored
    holds, bookings and customer tallies, and the audit trail)."""
    report = await check_inventory(database)
    assert report.sections > 0
    assert report.violations == []


async def submit_all(booker: Booker, commands: list[Any]) -> list[Any]:
    return await asyncio.gather(*(booker.submit(c) for c in commands), return_exceptions=True)


# Holds ----------------------------------------------------------------------------------


async def test_a_hold_takes_seats_at_once_and_confirms_into_bookings(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5, 10)
    hold = await booker.submit(hold_of(event, 2, 3, customer="c1"))
    assert isinstance(hold, Hold)
    assert hold.status == "active"
    assert hold.expires_at == clock() + timedelta(seconds=TTL)
    assert [(i.qty, i.unit_price_cents) for i in hold.items] == [(2, 1000), (3, 1001)]
    assert hold.total_price_cents == 2 * 1000 + 3 * 1001
    assert await seats(database, clock, event) == [(3, 2, 0), (7, 3, 0)]

    clock.advance(TTL - 1)
    confirmed = await booker.submit(ConfirmHold(hold.id, "pi_3Nxyz"))
    assert isinstance(confirmed, Confirmation)
    assert confirmed.hold.status == "confirmed"
    assert [(b.section_id, b.qty, b.hold_id, b.payment_reference) for b in confirmed.bookings] == [
        (event.sections[0].id, 2, hold.id, "pi_3Nxyz"),
        (event.sections[1].id, 3, hold.id, "pi_3Nxyz"),
    ]
    assert all(b.customer_id == "c1" for b in confirmed.bookings)
    assert await seats(database, clock, event) == [(3, 0, 2), (7, 0, 3)]
    stored = await get_hold(database, hold.id, OPEN_ACCESS)
    assert stored.status == "confirmed"
    await assert_consistent(database)


async def test_a_hold_is_all_or_nothing(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5, 2)
    with pytest.raises(InsufficientSeats) as refused:
        await booker.submit(hold_of(event, 2, 3))
    assert refused.value.remaining == 2
    assert await seats(database, clock, event) == [(5, 0, 0), (2, 0, 0)]
    other = await new_event(database, clock, 4)
    with pytest.raises(SectionNotFound):  # a section of another event: nothing held
        await booker.submit(
            PlaceHold(
                event.id,
                (
                    HoldItemRequest(event.sections[0].id, 1),
                    HoldItemRequest(other.sections[0].id, 1),
                ),
                TTL,
            )
        )
    with pytest.raises(EventNotFound):
        await booker.submit(hold_of(Event(str(uuid.uuid4()), "x", clock(), event.sections), 1))
    assert await seats(database, clock, event) == [(5, 0, 0), (2, 0, 0)]
    await assert_consistent(database)


async def test_release_gives_seats_back_and_is_harmless_twice(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5)
    hold = await booker.submit(hold_of(event, 4))
    assert isinstance(hold, Hold)
    first = await booker.submit(ReleaseHold(hold.id))
    again = await booker.submit(ReleaseHold(hold.id))
    assert isinstance(first, Released)
    assert first.hold.status == "released"
    assert isinstance(again, Released)
    assert await seats(database, clock, event) == [(5, 0, 0)]
    with pytest.raises(HoldNotActive) as refused:
        await booker.submit(ConfirmHold(hold.id))
    assert refused.value.status == "released"
    with pytest.raises(HoldNotFound):
        await booker.submit(ReleaseHold(str(uuid.uuid4())))
    with pytest.raises(HoldNotFound):
        await booker.submit(ConfirmHold("not-an-id"))
    await assert_consistent(database)


async def test_settling_and_cancelling_store_their_moment_like_every_timestamp(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    """On SQLite a timestamp is text: one written in another format (sqlite3's own
    "…+00:00") would sort and compare wrongly against the rest."""
    event = await new_event(database, clock, 5)
    released = await booker.submit(hold_of(event, 1))
    confirmed = await booker.submit(hold_of(event, 1))
    assert isinstance(released, Hold)
    assert isinstance(confirmed, Hold)
    clock.advance(1.5)
    await booker.submit(ReleaseHold(released.id))
    bought = await booker.submit(ConfirmHold(confirmed.id))
    assert isinstance(bought, Confirmation)
    clock.advance(1)
    await booker.submit(CancelBooking(bought.bookings[0].id))
    for hold in (released, confirmed):
        stored = await get_hold(database, hold.id, OPEN_ACCESS)
        assert stored.settled_at == hold.created_at + timedelta(seconds=1.5)
    if database.dialect == "sqlite":  # PostgreSQL's are typed
        async with database.engine.connect() as conn:
            moments = (
                await conn.execute(
                    text(
                        "SELECT settled_at FROM holds UNION ALL SELECT created_at FROM holds "
                        "UNION ALL SELECT cancelled_at FROM bookings"
                    )
                )
            ).scalars()
            assert {re.sub(r"\d", "9", moment) for moment in moments} == {
                "9999-99-99 99:99:99.999999"
            }
    await assert_consistent(database)


async def test_a_confirmed_hold_is_confirmed_once_and_cannot_be_released(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5)
    hold = await booker.submit(hold_of(event, 2))
    assert isinstance(hold, Hold)
    await booker.submit(ConfirmHold(hold.id))
    with pytest.raises(HoldNotActive):
        await booker.submit(ConfirmHold(hold.id))
    with pytest.raises(HoldNotActive):
        await booker.submit(ReleaseHold(hold.id))
    assert await seats(database, clock, event) == [(3, 0, 2)]
    await assert_consistent(database)


# Expiry, with no sweeper ------------------------------------------------------------------


async def test_an_expired_hold_counts_as_remaining_before_anything_sweeps(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5)
    hold = await booker.submit(hold_of(event, 4))
    assert isinstance(hold, Hold)
    clock.advance(TTL - 0.001)
    assert await seats(database, clock, event) == [(1, 4, 0)]
    clock.advance(0.001)  # expiresAt itself: expired
    assert await seats(database, clock, event) == [(5, 0, 0)]
    assert (await get_hold(database, hold.id, OPEN_ACCESS)).status_at(clock()) == "expired"
    with pytest.raises(HoldExpired):
        await booker.submit(ConfirmHold(hold.id))
    await assert_consistent(database)


async def test_a_request_is_never_refused_while_expired_holds_would_cover_it(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5, 5)
    first = await booker.submit(hold_of(event, 3, 2))  # spans both sections
    assert isinstance(first, Hold)
    await booker.submit(Book(event.id, event.sections[0].id, 2))  # S0 sold out
    clock.advance(TTL)
    booking = await booker.submit(Book(event.id, event.sections[0].id, 3))
    assert isinstance(booking, Booking)
    # The hold's seats in S0 came back in that batch; those in S1 still count as
    # remaining for readers, and come back in the row with the next decision there.
    assert await seats(database, clock, event) == [(0, 0, 5), (5, 0, 0)]
    assert (await get_hold(database, first.id, OPEN_ACCESS)).status == "expired"
    await booker.submit(Book(event.id, event.sections[1].id, 5))
    assert await seats(database, clock, event) == [(0, 0, 5), (0, 0, 5)]
    await assert_consistent(database)


async def test_the_sweeper_gives_expired_seats_back_in_the_rows(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5, 5)
    hold = await booker.submit(hold_of(event, 3, 2))
    kept = await booker.submit(hold_of(event, 1, 0, ttl=TTL * 2))
    assert isinstance(hold, Hold)
    assert isinstance(kept, Hold)
    sweeper = Sweeper(database, clock=clock, interval_seconds=0, idempotency_ttl_hours=24)
    assert await sweeper.sweep() == 0  # nothing has expired yet
    clock.advance(TTL)
    assert await sweeper.sweep() == 5
    assert await sweeper.sweep() == 0  # sweeping twice changes nothing
    async with database.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(sections.c.remaining, sections.c.held).order_by(sections.c.position)
            )
        ).all()
    assert [tuple(row) for row in stored] == [(4, 1), (5, 0)]
    assert (await get_hold(database, hold.id, OPEN_ACCESS)).status == "expired"
    assert (await get_hold(database, kept.id, OPEN_ACCESS)).status == "active"
    await assert_consistent(database)


# Races: exactly one side wins ------------------------------------------------------------


async def test_confirm_and_release_racing_exactly_one_wins(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    """Batched, the two share a batch and the first in it wins; direct, they are two
    transactions and either may commit first. Either way exactly one wins."""
    event = await new_event(database, clock, 5)
    confirmed = 0
    for first, second in ((ConfirmHold, ReleaseHold), (ReleaseHold, ConfirmHold)):
        hold = await booker.submit(hold_of(event, 1))
        assert isinstance(hold, Hold)
        results = await submit_all(booker, [first(hold.id), second(hold.id)])
        winners = [r for r in results if isinstance(r, Confirmation | Released)]
        losers = [r for r in results if isinstance(r, HoldNotActive)]
        assert (len(winners), len(losers)) == (1, 1), results
        status = (await get_hold(database, hold.id, OPEN_ACCESS)).status
        assert status == ("confirmed" if isinstance(winners[0], Confirmation) else "released")
        confirmed += status == "confirmed"
    assert await seats(database, clock, event) == [(5 - confirmed, 0, confirmed)]
    await assert_consistent(database)


async def test_confirm_at_the_moment_of_expiry_against_a_booking_that_needs_the_seats(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 2)
    hold = await booker.submit(hold_of(event, 2))
    assert isinstance(hold, Hold)
    clock.advance(TTL)
    results = await submit_all(
        booker, [Book(event.id, event.sections[0].id, 2), ConfirmHold(hold.id)]
    )
    assert isinstance(results[0], Booking)
    assert isinstance(results[1], HoldExpired)
    assert await seats(database, clock, event) == [(0, 0, 2)]
    await assert_consistent(database)


# Cancellation ------------------------------------------------------------------------------


async def test_cancel_gives_seats_back_and_repeats_harmlessly(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5)
    booking = await booker.submit(Book(event.id, event.sections[0].id, 3, customer_id="c1"))
    assert isinstance(booking, Booking)
    results = await submit_all(booker, [CancelBooking(booking.id), CancelBooking(booking.id)])
    assert all(isinstance(r, Booking) and r.status == "cancelled" for r in results)
    again = await booker.submit(CancelBooking(booking.id))
    assert isinstance(again, Booking)
    assert again.cancelled_at == results[0].cancelled_at
    assert await seats(database, clock, event) == [(5, 0, 0)]
    with pytest.raises(Exception, match="not found"):
        await booker.submit(CancelBooking(str(uuid.uuid4())))
    await assert_consistent(database)


# Customer caps -------------------------------------------------------------------------------


async def test_a_customer_cap_counts_holds_and_bookings_and_frees_on_release(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 20, 20, cap=4)
    hold = await booker.submit(hold_of(event, 1, 1, customer="c1"))
    assert isinstance(hold, Hold)
    await booker.submit(Book(event.id, event.sections[0].id, 2, customer_id="c1"))
    with pytest.raises(CustomerLimitExceeded) as refused:
        await booker.submit(Book(event.id, event.sections[1].id, 1, customer_id="c1"))
    assert (refused.value.limit, refused.value.remaining_for_customer) == (4, 0)
    await booker.submit(Book(event.id, event.sections[1].id, 4, customer_id="c2"))  # others
    await booker.submit(Book(event.id, event.sections[1].id, 5))  # no customer named
    await booker.submit(ReleaseHold(hold.id))
    await booker.submit(Book(event.id, event.sections[1].id, 2, customer_id="c1"))
    with pytest.raises(CustomerLimitExceeded) as refused:
        await booker.submit(hold_of(event, 1, customer="c1"))
    assert refused.value.remaining_for_customer == 0
    await assert_consistent(database)


async def test_an_expired_hold_frees_its_customers_allowance(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 20, 20, cap=3)
    await booker.submit(hold_of(event, 0, 3, customer="c1"))
    with pytest.raises(CustomerLimitExceeded):
        await booker.submit(Book(event.id, event.sections[0].id, 1, customer_id="c1"))
    clock.advance(TTL)
    booking = await booker.submit(Book(event.id, event.sections[0].id, 3, customer_id="c1"))
    assert isinstance(booking, Booking)
    cancelled = await booker.submit(CancelBooking(booking.id))
    assert isinstance(cancelled, Booking)
    again = await booker.submit(Book(event.id, event.sections[0].id, 3, customer_id="c1"))
    assert isinstance(again, Booking)
    await assert_consistent(database)


async def test_50_parallel_requests_never_pass_a_customer_cap(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 500, 500, cap=7)
    commands: list[Any] = []
    for n in range(50):
        if n % 3 == 0:
            commands.append(hold_of(event, 1, 1, customer="greedy"))
        else:
            commands.append(
                Book(event.id, event.sections[n % 2].id, 1 + n % 2, customer_id="greedy")
            )
    results = await submit_all(booker, commands)
    taken = sum(r.qty if isinstance(r, Booking | Hold) else 0 for r in results)
    assert taken <= 7
    assert taken >= 6, "refused although the cap had room for the smallest request"
    assert all(isinstance(r, Booking | Hold | CustomerLimitExceeded) for r in results)
    await assert_consistent(database)


# Idempotency -------------------------------------------------------------------------------


def key(name: str, fingerprint: str = "f1", scope: str = "c1") -> Idempotency:
    return Idempotency(scope, name, fingerprint)


async def test_a_retry_gets_the_first_answer_and_books_nothing(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 5)
    section = event.sections[0].id
    first = await booker.submit(Book(event.id, section, 2, "c1", key("k1")))
    clock.advance(60)
    retry = await booker.submit(Book(event.id, section, 2, "c1", key("k1")))
    assert isinstance(first, Booking)
    assert isinstance(retry, Booking)
    assert (retry.id, retry.created_at) == (first.id, first.created_at)
    with pytest.raises(IdempotencyKeyReused):
        await booker.submit(Book(event.id, section, 1, "c1", key("k1", fingerprint="f2")))
    other_scope = await booker.submit(Book(event.id, section, 2, "c2", key("k1", scope="c2")))
    assert isinstance(other_scope, Booking)
    assert other_scope.id != first.id
    assert await seats(database, clock, event) == [(1, 0, 4)]
    await assert_consistent(database)


async def test_refusals_are_stored_and_replayed_too(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 2)
    section = event.sections[0].id
    with pytest.raises(InsufficientSeats):
        await booker.submit(Book(event.id, section, 3, None, key("k")))
    await booker.submit(Book(event.id, section, 1))  # the count changes meanwhile
    with pytest.raises(InsufficientSeats) as replayed:
        await booker.submit(Book(event.id, section, 3, None, key("k")))
    assert replayed.value.remaining == 2, "not the stored answer"
    await assert_consistent(database)


async def test_20_concurrent_requests_with_one_key_book_once(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 100)
    command = Book(event.id, event.sections[0].id, 1, "c1", key("same"))
    results = await submit_all(booker, [command] * 20)
    bookings_made = {r.id for r in results if isinstance(r, Booking)}
    assert len(bookings_made) == 1
    assert all(isinstance(r, Booking | IdempotencyInProgress) for r in results)
    retry = await booker.submit(command)
    assert isinstance(retry, Booking)
    assert {retry.id} == bookings_made
    assert await seats(database, clock, event) == [(99, 0, 1)]
    await assert_consistent(database)


async def test_every_kind_of_command_replays_its_answer(
    booker: Booker, database: Database, clock: FakeClock
) -> None:
    event = await new_event(database, clock, 10)
    place = hold_of(event, 2, customer="c1", idempotency=key("hold"))
    hold = await booker.submit(place)
    assert isinstance(hold, Hold)
    assert await booker.submit(place) == hold
    confirm = ConfirmHold(hold.id, "pi_1", key("confirm", scope=""))
    confirmed = await booker.submit(confirm)
    replayed = await booker.submit(confirm)
    assert isinstance(confirmed, Confirmation)
    assert isinstance(replayed, Confirmation)
    assert [b.id for b in replayed.bookings] == [b.id for b in confirmed.bookings]
    cancel = CancelBooking(confirmed.bookings[0].id, key("cancel", scope=""))
    assert await booker.submit(cancel) == await booker.submit(cancel)
    assert await seats(database, clock, event) == [(10, 0, 0)]
    await assert_consistent(database)
