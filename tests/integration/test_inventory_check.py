"""`boxoffice check` on SQLite and PostgreSQL: quiet on a consistent database after every
kind of command, and loud (exit 1, the rule named) on each corruption the schema's own
constraints let through."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import delete, update

from boxoffice.booking import BatchedBooker
from boxoffice.db.database import Database
from boxoffice.db.tables import bookings, customer_tickets, hold_items, sections
from boxoffice.domain.commands import Book, CancelBooking, Confirmation, ConfirmHold, ReleaseHold
from boxoffice.domain.model import Booking, Event, EventSpec, Hold, SectionSpec
from boxoffice.services.clock import FakeClock
from boxoffice.services.events import create_event
from boxoffice.services.inventory_check import check_inventory
from tests.integration.test_checkout import hold_of


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def busy(database: Database, clock: FakeClock) -> tuple[Event, dict[str, uuid.UUID]]:
    """An event with one of every change behind it; the ids of a booking, an active hold and
    a confirmed hold."""
    booker = BatchedBooker(database, max_tickets_per_booking=10, clock=clock)
    await booker.start()
    try:
        event = await create_event(
            database,
            EventSpec(
                "Gala", (SectionSpec("A", 1000, 50), SectionSpec("B", 2000, 50)), max_per_customer=8
            ),
            clock(),
        )
        a, b = event.sections
        booked = await booker.submit(Book(event.id, a.id, 2, customer_id="c1"))
        cancelled = await booker.submit(Book(event.id, b.id, 1, customer_id="c1"))
        await booker.submit(CancelBooking(cancelled.id))  # type: ignore[union-attr]
        active = await booker.submit(hold_of(event, 1, 2, customer="c1"))
        released = await booker.submit(hold_of(event, 3, 0, customer="c2"))
        await booker.submit(ReleaseHold(released.id))  # type: ignore[union-attr]
        to_confirm = await booker.submit(hold_of(event, 1, 1, customer="c2"))
        confirmed = await booker.submit(ConfirmHold(to_confirm.id))  # type: ignore[union-attr]
        lapsing = await booker.submit(hold_of(event, 0, 4, customer="c3", ttl=60))
        clock.advance(61)  # expired, its seats given back by the next write in its section
        await booker.submit(Book(event.id, b.id, 1))
        assert isinstance(booked, Booking)
        assert isinstance(active, Hold)
        assert isinstance(confirmed, Confirmation)
        assert isinstance(lapsing, Hold)
    finally:
        await booker.stop()
    return event, {
        name: uuid.UUID(ident)
        for name, ident in (
            ("booking", booked.id),
            ("hold", active.id),
            ("confirmed", to_confirm.id),
        )
    }


def run_check(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boxoffice", "check"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_consistent_database_passes(
    database: Database, database_url: str, busy: tuple[Event, dict[str, uuid.UUID]]
) -> None:
    report = await check_inventory(database)
    assert (report.sections, report.violations) == (2, [])
    assert report.holds == 4
    done = run_check(database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Inventory consistent: 2 sections, 4 holds." in done.stdout


async def corrupt(database: Database, statement: object) -> None:
    async with database.engine.begin() as conn:
        await conn.execute(statement)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("damage", "rules"),
    [
        ("seats_moved_to_held", {"held_matches_holds", "audit_trail"}),
        ("booking_lost", {"sold_matches_bookings", "confirmed_hold", "customer_tickets"}),
        ("hold_item_released_alone", {"hold_items", "held_matches_holds"}),
        ("tally_drifted", {"customer_tickets"}),
        ("seat_sold_silently", {"sold_matches_bookings", "audit_trail"}),
    ],
)
async def test_each_corruption_is_named_and_fails_the_command(
    database: Database,
    database_url: str,
    busy: tuple[Event, dict[str, uuid.UUID]],
    damage: str,
    rules: set[str],
) -> None:
    event, ids = busy
    a = uuid.UUID(event.sections[0].id)
    statements = {
        "seats_moved_to_held": update(sections)
        .where(sections.c.id == a)
        .values(remaining=sections.c.remaining - 1, held=sections.c.held + 1),
        # the booking made when the hold was confirmed: its seats stay sold, unbacked
        "booking_lost": delete(bookings).where(bookings.c.hold_id == ids["confirmed"]),
        "hold_item_released_alone": update(hold_items)
        .where(hold_items.c.hold_id == ids["hold"], hold_items.c.section_id == a)
        .values(active=False),
        "tally_drifted": update(customer_tickets)
        .where(customer_tickets.c.customer_id == "c1")
        .values(tickets=customer_tickets.c.tickets - 1),
        "seat_sold_silently": update(sections)
        .where(sections.c.id == a)
        .values(remaining=sections.c.remaining - 1, sold=sections.c.sold + 1),
    }
    await corrupt(database, statements[damage])
    report = await check_inventory(database)
    assert {v.rule for v in report.violations} == rules
    done = run_check(database_url)
    assert done.returncode == 1
    for rule in rules:
        assert f"VIOLATION {rule}: " in done.stdout
    assert f"{len(report.violations)} violations in 2 sections and 4 holds." in done.stdout
