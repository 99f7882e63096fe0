"""A hypothesis state machine over the real booking path: books, holds, confirms, releases,
cancels, sweeps and moves the clock at random, on SQLite and PostgreSQL, and after every
step checks the database against a model, the invariant of every section, and the audit
trail (`audit verify`)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from boxoffice.booking import BatchedBooker
from boxoffice.booking.sweeper import Sweeper
from boxoffice.config import async_database_url
from boxoffice.db.database import Database, Limits
from boxoffice.db.tables import metadata
from boxoffice.domain.commands import (
    Book,
    CancelBooking,
    Confirmation,
    ConfirmHold,
    HoldItemRequest,
    PlaceHold,
    ReleaseHold,
)
from boxoffice.domain.errors import (
    BoxofficeError,
    CustomerLimitExceeded,
    HoldExpired,
    HoldNotActive,
    InsufficientSeats,
)
from boxoffice.domain.model import Booking, Event, EventSpec, Hold, SectionSpec
from boxoffice.services.clock import FakeClock
from boxoffice.services.events import create_event, get_event
from boxoffice.services.unit_of_work import UnitOfWork
from tests.integration.test_checkout import assert_consistent

CAPACITIES = (4, 6)
CAP = 5  # per customer
CUSTOMERS = ("c1", "c2", None)


class CheckoutMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    bookings = Bundle("bookings")

    def __init__(self, loop: asyncio.AbstractEventLoop, database: Database) -> None:
        super().__init__()
        self.loop = loop
        self.clock = FakeClock()
        self.database = database
        self.booker = BatchedBooker(self.database, max_tickets_per_booking=10, clock=self.clock)
        self.sweeper = Sweeper(
            self.database, clock=self.clock, interval_seconds=0, idempotency_ttl_hours=24
        )
        self.run(self.booker.start())
        # The model: what every reader must see, from the outcomes alone.
        self.held: dict[str, tuple[Hold, str]] = {}  # hold id -> (hold, status as settled)
        self.sold: dict[str, Booking] = {}  # confirmed bookings
        self.event: Event | None = None

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def teardown(self) -> None:
        self.run(self.booker.stop())

    @initialize()
    def create(self) -> None:
        self.run(emptied(self.database))
        spec = EventSpec(
            "Machine",
            tuple(SectionSpec(f"S{i}", 100 * (i + 1), c) for i, c in enumerate(CAPACITIES)),
            max_per_customer=CAP,
        )
        self.event = self.run(create_event(self.database, spec, self.clock()))

    # The model's view ---------------------------------------------------------------------

    def active(self) -> list[Hold]:
        now = self.clock()
        return [
            hold
            for hold, status in self.held.values()
            if status == "active" and now < hold.expires_at
        ]

    def expected(self) -> list[tuple[int, int, int]]:
        assert self.event is not None
        counts = []
        for capacity, section in zip(CAPACITIES, self.event.sections, strict=True):
            held = sum(i.qty for h in self.active() for i in h.items if i.section_id == section.id)
            sold = sum(b.qty for b in self.sold.values() if b.section_id == section.id)
            counts.append((capacity - held - sold, held, sold))
        return counts

    def tickets(self, customer: str | None) -> int:
        if customer is None:
            return 0
        held = sum(h.qty for h in self.active() if h.customer_id == customer)
        return held + sum(b.qty for b in self.sold.values() if b.customer_id == customer)

    def refusal_justified(
        self, error: BoxofficeError, customer: str | None, wants: dict[int, int]
    ) -> None:
        left = self.expected()
        if isinstance(error, InsufficientSeats):
            assert any(qty > left[index][0] for index, qty in wants.items()), (error, left)
        elif isinstance(error, CustomerLimitExceeded):
            assert self.tickets(customer) + sum(wants.values()) > CAP
            assert error.remaining_for_customer == max(0, CAP - self.tickets(customer))
        else:
            raise AssertionError(f"unexpected refusal {error!r}")

    # Rules --------------------------------------------------------------------------------

    @rule(
        target=bookings,
        index=st.sampled_from([0, 1]),
        qty=st.integers(1, 4),
        customer=st.sampled_from(CUSTOMERS),
    )
    def book(self, index: int, qty: int, customer: str | None) -> Any:
        assert self.event is not None
        section = self.event.sections[index]
        try:
            booking = self.run(self.booker.submit(Book(self.event.id, section.id, qty, customer)))
        except BoxofficeError as error:
            self.refusal_justified(error, customer, {index: qty})
            return None
        assert isinstance(booking, Booking)
        self.sold[booking.id] = booking
        return booking.id

    @rule(
        target=holds,
        qtys=st.tuples(st.integers(0, 3), st.integers(0, 3)).filter(any),
        customer=st.sampled_from(CUSTOMERS),
        ttl=st.sampled_from([30, 60, 600]),
    )
    def hold(self, qtys: tuple[int, int], customer: str | None, ttl: int) -> Any:
        assert self.event is not None
        items = tuple(
            HoldItemRequest(section.id, qty)
            for section, qty in zip(self.event.sections, qtys, strict=True)
            if qty
        )
        try:
            hold = self.run(self.booker.submit(PlaceHold(self.event.id, items, ttl, customer)))
        except BoxofficeError as error:
            wants = {index: qty for index, qty in enumerate(qtys) if qty}
            self.refusal_justified(error, customer, wants)
            return None
        assert isinstance(hold, Hold)
        assert hold.expires_at == self.clock() + timedelta(seconds=ttl)
        self.held[hold.id] = (hold, "active")
        return hold.id

    def settle(self, hold_id: str | None, confirm: bool) -> None:
        if hold_id is None:
            return
        hold, status = self.held[hold_id]
        expired = status == "active" and self.clock() >= hold.expires_at
        command = ConfirmHold(hold_id, "pi_test") if confirm else ReleaseHold(hold_id)
        try:
            outcome = self.run(self.booker.submit(command))
        except HoldExpired:
            assert confirm
            assert expired
            return
        except HoldNotActive:
            assert status == "confirmed" or (confirm and status == "released")
            return
        if confirm:
            assert isinstance(outcome, Confirmation)
            assert status == "active"
            assert not expired
            for booking in outcome.bookings:
                self.sold[booking.id] = booking
            self.held[hold_id] = (hold, "confirmed")
        elif status == "active" and not expired:
            self.held[hold_id] = (hold, "released")

    @rule(hold_id=holds)
    def confirm(self, hold_id: str | None) -> None:
        self.settle(hold_id, confirm=True)

    @rule(hold_id=consumes(holds))
    def release(self, hold_id: str | None) -> None:
        self.settle(hold_id, confirm=False)

    @rule(booking_id=bookings)
    def cancel(self, booking_id: str | None) -> None:
        if booking_id is None:
            return
        cancelled = self.run(self.booker.submit(CancelBooking(booking_id)))
        assert isinstance(cancelled, Booking)
        assert cancelled.status == "cancelled"
        self.sold.pop(booking_id, None)

    @rule(seconds=st.sampled_from([1, 29, 30, 61, 599]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        self.run(self.sweeper.sweep())

    # After every step --------------------------------------------------------------------

    @invariant()
    def every_reader_sees_the_model_and_the_trail_agrees(self) -> None:
        if self.event is None:
            return
        fresh = self.run(get_event(self.database, self.event.id, self.clock()))
        assert [(s.remaining, s.held, s.sold) for s in fresh.sections] == self.expected()
        self.run(assert_consistent(self.database))


async def emptied(database: Database) -> None:
    """Every row gone: each example starts on an empty database, as if it were new, so a
    failure is its own steps' doing (and shrinks to them), not an earlier example's."""
    async with UnitOfWork(database, write=True) as uow:
        for table in reversed(metadata.sorted_tables):
            await uow.conn.execute(table.delete())
        await uow.commit()


def test_any_sequence_of_commands_keeps_every_count_right(database_url: str) -> None:
    # One database (and SQLite's writer process) for every example, emptied between them:
    # a new database and writer process per example was two thirds of this test's time.
    loop = asyncio.new_event_loop()
    database = Database.from_url(async_database_url(database_url), limits=Limits(pool_size=4))
    try:
        run_state_machine_as_test(
            lambda: CheckoutMachine(loop, database),
            settings=settings(
                max_examples=12,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        loop.run_until_complete(database.dispose())
        loop.close()
