"""Deciding a batch of commands, first come first served, on a snapshot of what they touch.

    Inventory (the rows, as loaded)  ──decide(commands, now)──>  Decisions
                                                                 ├── one outcome per command
                                                                 └── Effects: what to write

Plain Python, and the only place where inventory rules are applied: the
group commit, the direct path and the sweeper all come here, on both
databases, and the code in `booking/` only loads the snapshot and writes the
effects. A later command sees what every earlier one in the batch did.

Before any command, every expired hold in the snapshot gives back its seats
in the sections the snapshot holds (and, once, its tickets to its customer's
tally): seats of expired holds are never in anyone's way, whether or not a
sweeper has run.

Each command's outcome is a result (`Booking`, `Hold`, `Confirmation`,
`Released`, `Swept`) or the `BoxofficeError` that refused it; a refusal changes
nothing but the audit trail. A command with an idempotency key already
answered gets that answer again and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from boxoffice.domain.access import Principal
from boxoffice.domain.audit import Action, AuditRecord
from boxoffice.domain.commands import (
    Book,
    CancelBooking,
    Command,
    Confirmation,
    ConfirmHold,
    Idempotency,
    PlaceHold,
    Released,
    ReleaseHold,
    SweepExpired,
    Swept,
)
from boxoffice.domain.errors import (
    BookingNotFound,
    BoxofficeError,
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
from boxoffice.domain.ids import cached_canonical_id
from boxoffice.domain.model import Booking, Hold, HoldItem, Section, expiry

Result = Booking | Hold | Confirmation | Released | Swept
Outcome = Result | BoxofficeError
Tally = tuple[str, str]  # (event id, customer id)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What a request with an idempotency key was answered, as stored with its effects."""

    fingerprint: str
    outcome: Outcome


@dataclass(slots=True)
class Inventory:
    """The stored rows a batch's commands may read, keyed by canonical id.

    `tallies` hold the tickets (active holds + confirmed bookings) of each
    customer in an event with a `max_per_customer`, and only those. `events`
    are the events known to exist among those the commands name (to tell an
    unknown event from a section of another event). `busy_keys` are
    idempotency keys another transaction is using right now.
    """

    sections: dict[str, Section] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    bookings: dict[str, Booking] = field(default_factory=dict)
    tallies: dict[Tally, int] = field(default_factory=dict)
    events: set[str] = field(default_factory=set)
    answers: dict[tuple[str, str], StoredAnswer] = field(default_factory=dict)
    busy_keys: set[tuple[str, str]] = field(default_factory=set)


@dataclass(slots=True)
class Effects:
    """Everything a batch writes, as final states and new rows, in arrival order."""

    sections: dict[str, Section] = field(default_factory=dict)  # changed, as they end up
    versions: dict[str, int] = field(default_factory=dict)  # as loaded (SQLite's write checks)
    # Each one's (remaining, held, sold) as loaded, and the most seats the batch was
    # below the loaded remaining at any point (seats given back first count against
    # seats taken after): what the one-statement write checks on the true count.
    loaded: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    drawn: dict[str, int] = field(default_factory=dict)
    new_bookings: list[Booking] = field(default_factory=list)
    changed_bookings: dict[str, Booking] = field(default_factory=dict)
    new_holds: list[Hold] = field(default_factory=list)
    changed_holds: dict[str, Hold] = field(default_factory=dict)
    hold_statuses: dict[str, str] = field(default_factory=dict)  # each one's status as loaded
    # (hold id, section id, event id): items whose seats are no longer held
    freed_items: list[tuple[str, str, str]] = field(default_factory=list)
    tally_changes: dict[Tally, int] = field(default_factory=dict)  # tickets added (or taken)
    answers: list[tuple[Idempotency, Outcome]] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.sections
            or self.new_bookings
            or self.changed_bookings
            or self.new_holds
            or self.changed_holds
            or self.tally_changes
            or self.answers
            or self.audit
        )


@dataclass(slots=True)
class Changes:
    """What a batch did, counted: the service's bookings, holds and cancellations metrics."""

    bookings: int = 0  # booked at once, or from a confirmed hold's items
    tickets_sold: int = 0
    holds_placed: int = 0
    holds_confirmed: int = 0
    holds_released: int = 0
    holds_expired: int = 0
    bookings_cancelled: int = 0

    @classmethod
    def of(cls, effects: Effects) -> Changes:
        settled = {"confirmed": 0, "released": 0, "expired": 0}
        for ident, hold in effects.changed_holds.items():
            # An expired hold given back one section at a time is settled once: the batch
            # that found it active.
            if effects.hold_statuses.get(ident) == "active" and hold.status in settled:
                settled[hold.status] += 1
        return cls(
            bookings=len(effects.new_bookings),
            tickets_sold=sum(booking.qty for booking in effects.new_bookings),
            holds_placed=len(effects.new_holds),
            holds_confirmed=settled["confirmed"],
            holds_released=settled["released"],
            holds_expired=settled["expired"],
            bookings_cancelled=len(effects.changed_bookings),
        )


@dataclass(slots=True)
class Decisions:
    outcomes: list[Outcome]
    effects: Effects
    # Some command was refused for want of seats or of its customer's allowance, and
    # the snapshot did not hold the expired holds that might have made room.
    short: bool = False


def decide(
    commands: Sequence[Command],
    inventory: Inventory,
    now: datetime,
    new_id: Callable[[], str],
    *,
    expired_loaded: bool = False,
) -> Decisions:
    """Each command in order; `inventory` is changed in place (decide on a copy)."""
    deciding = _Deciding(inventory, now, new_id)
    deciding.give_back_expired()
    outcomes = [deciding.answer(command) for command in commands]
    return Decisions(outcomes, deciding.effects, deciding.short and not expired_loaded)


class _Deciding:
    def __init__(self, inventory: Inventory, now: datetime, new_id: Callable[[], str]) -> None:
        self.inv = inventory
        self.now = now
        self.new_id = new_id
        self.effects = Effects()
        self.answered: dict[tuple[str, str], StoredAnswer] = {}
        self.short = False

    # Idempotency -------------------------------------------------------------------

    def answer(self, command: Command) -> Outcome:
        key = command.idempotency
        if key is None:
            return self.apply(command)
        if key.ident in self.inv.busy_keys:
            return IdempotencyInProgress()
        stored = self.inv.answers.get(key.ident) or self.answered.get(key.ident)
        if stored is not None:
            return (
                stored.outcome
                if stored.fingerprint == key.fingerprint
                else (IdempotencyKeyReused())
            )
        outcome = self.apply(command)
        self.answered[key.ident] = StoredAnswer(key.fingerprint, outcome)
        self.effects.answers.append((key, outcome))
        return outcome

    def apply(self, command: Command) -> Outcome:
        if isinstance(command, Book):
            return self.book(command)
        if isinstance(command, PlaceHold):
            return self.place_hold(command)
        if isinstance(command, ConfirmHold):
            return self.confirm(command)
        if isinstance(command, ReleaseHold):
            return self.release(command)
        if isinstance(command, CancelBooking):
            return self.cancel(command)
        return self.sweep(command)

    # Commands ----------------------------------------------------------------------

    def book(self, command: Book) -> Outcome:
        section = self.section_of(command.event_id, command.section_id, command.actor)
        if isinstance(section, BoxofficeError):
            return section
        refusal: BoxofficeError | None = self.check_customer(
            section, command.customer_id, command.qty
        )
        if refusal is None and command.qty > section.remaining:
            refusal = self.short_of_seats(command.qty, section.remaining)
        if refusal is not None:
            self.record_refusal("book", section, command.qty, refusal, command)
            return refusal
        self.changing(section).sell(command.qty)
        self.drawing(section)
        booking = Booking(
            self.new_id(),
            section.event_id,
            section.id,
            command.qty,
            section.price_cents,
            self.now,
            customer_id=command.customer_id,
        )
        self.effects.new_bookings.append(booking)
        self.add_tickets(section, command.customer_id, command.qty)
        self.record("book", section, command.qty, command, booking_id=booking.id)
        return booking

    def place_hold(self, command: PlaceHold) -> Outcome:
        found: list[Section] = []
        for item in command.items:
            section = self.section_of(command.event_id, item.section_id, command.actor)
            if isinstance(section, BoxofficeError):
                return section
            found.append(section)
        refusal = self.check_customer(found[0], command.customer_id, command.qty)
        if refusal is not None:
            self.record_refusal("hold", found[0], command.qty, refusal, command)
            return refusal
        for section, item in zip(found, command.items, strict=True):
            if item.qty > section.remaining:
                short = self.short_of_seats(item.qty, section.remaining)
                self.record_refusal("hold", section, item.qty, short, command)
                return short
        hold = Hold(
            self.new_id(),
            found[0].event_id,
            command.customer_id,
            tuple(
                HoldItem(section.id, item.qty, section.price_cents)
                for section, item in zip(found, command.items, strict=True)
            ),
            "active",
            expiry(self.now, command.ttl_seconds),
            self.now,
        )
        for section, item in zip(found, command.items, strict=True):
            self.changing(section).hold(item.qty)
            self.drawing(section)
            self.record("hold", section, item.qty, command, hold_id=hold.id)
        self.effects.new_holds.append(hold)
        self.add_tickets(found[0], command.customer_id, command.qty)
        return hold

    def confirm(self, command: ConfirmHold) -> Outcome:
        hold = self.hold_named(command.hold_id, command.actor)
        if isinstance(hold, BoxofficeError):
            return hold
        status = hold.status_at(self.now)
        if status != "active":
            refusal: BoxofficeError = (
                HoldExpired(hold.id) if status == "expired" else HoldNotActive(hold.id, status)
            )
            self.record_hold_refusal("confirm", hold, refusal, command)
            return refusal
        bookings = []
        for item in hold.items:
            section = self.changing(self.inv.sections[item.section_id])
            section.sell_held(item.qty)
            booking = Booking(
                self.new_id(),
                hold.event_id,
                item.section_id,
                item.qty,
                item.unit_price_cents,
                self.now,
                customer_id=hold.customer_id,
                hold_id=hold.id,
                payment_reference=command.payment_reference,
            )
            bookings.append(booking)
            self.effects.new_bookings.append(booking)
            self.record("confirm", section, item.qty, command, hold=hold, booking_id=booking.id)
        confirmed = self.settle(hold, "confirmed")
        return Confirmation(confirmed, tuple(bookings))

    def release(self, command: ReleaseHold) -> Outcome:
        hold = self.hold_named(command.hold_id, command.actor)
        if isinstance(hold, BoxofficeError):
            return hold
        status = hold.status_at(self.now)
        if status == "confirmed":
            refusal = HoldNotActive(hold.id, status)
            self.record_hold_refusal("release", hold, refusal, command)
            return refusal
        if status != "active":  # released or expired already: its seats are free
            return Released(hold)
        for item in hold.items:
            section = self.changing(self.inv.sections[item.section_id])
            section.free_held(item.qty)
            self.record("release", section, item.qty, command, hold=hold)
        self.take_tickets(hold.event_id, hold.customer_id, hold.qty)
        return Released(self.settle(hold, "released"))

    def cancel(self, command: CancelBooking) -> Outcome:
        ident = cached_canonical_id(command.booking_id)
        booking = None if ident is None else self.inv.bookings.get(ident)
        if booking is None or not self.may_see(
            command.actor, booking.customer_id, booking.section_id
        ):
            return BookingNotFound(command.booking_id)
        if booking.status == "cancelled":
            return booking
        section = self.changing(self.inv.sections[booking.section_id])
        section.free_sold(booking.qty)
        cancelled = booking.cancelled(self.now)
        self.inv.bookings[booking.id] = cancelled
        self.effects.changed_bookings[booking.id] = cancelled
        self.take_tickets(booking.event_id, booking.customer_id, booking.qty)
        self.record(
            "cancel",
            section,
            booking.qty,
            command,
            customer_id=booking.customer_id,
            hold_id=booking.hold_id,
            booking_id=booking.id,
        )
        return cancelled

    def sweep(self, command: SweepExpired) -> Outcome:
        # give_back_expired did the work for every expired hold the snapshot holds.
        named = {cached_canonical_id(ident) for _, ident in command.sections}
        return Swept(
            sum(r.qty for r in self.effects.audit if r.action == "expire" and r.section_id in named)
        )

    # Expired holds ------------------------------------------------------------------

    def give_back_expired(self) -> None:
        """Expired holds free their seats in the loaded sections, and their tickets."""
        for hold_id in sorted(self.inv.holds):
            hold = self.inv.holds[hold_id]
            if hold.status_at(self.now) != "expired":
                continue
            if hold.status == "active":
                hold = self.settle(hold, "expired")
                self.take_tickets(hold.event_id, hold.customer_id, hold.qty)
            for item in hold.items:
                section = self.inv.sections.get(item.section_id)
                if not item.active or section is None:
                    continue  # its seats are free already, or given back when it is loaded
                self.changing(section).free_held(item.qty)
                self.effects.hold_statuses.setdefault(hold.id, self.inv.holds[hold.id].status)
                hold = hold.without_seats_in(item.section_id)
                self.inv.holds[hold.id] = hold
                self.effects.changed_holds[hold.id] = hold
                self.effects.freed_items.append((hold.id, item.section_id, hold.event_id))
                self.record("expire", section, item.qty, None, hold=hold)

    # Helpers -----------------------------------------------------------------------

    def section_of(
        self, event_id: str, section_id: str, actor: Principal | None
    ) -> Section | BoxofficeError:
        """The section to sell from; an event the actor may not sell in is not found."""
        event = cached_canonical_id(event_id)
        ident = cached_canonical_id(section_id)
        section = None if ident is None else self.inv.sections.get(ident)
        if event is None or section is None or section.event_id != event:
            if event is not None and event in self.inv.events:
                # Any section of it tells who owns the event: a stranger learns nothing.
                owner = next(
                    (s.organizer_id for s in self.inv.sections.values() if s.event_id == event),
                    None,
                )
                if actor is None or actor.may_sell_in(owner):
                    return SectionNotFound(event_id, section_id)
            return EventNotFound(event_id)
        if actor is not None and not actor.may_sell_in(section.organizer_id):
            return EventNotFound(event_id)
        return section

    def hold_named(self, hold_id: str, actor: Principal | None) -> Hold | BoxofficeError:
        ident = cached_canonical_id(hold_id)
        hold = None if ident is None else self.inv.holds.get(ident)
        if hold is None or not self.may_see(actor, hold.customer_id, hold.items[0].section_id):
            return HoldNotFound(hold_id)
        return hold

    def may_see(self, actor: Principal | None, customer_id: str | None, section_id: str) -> bool:
        """Whether `actor` may touch a booking or hold of `customer_id` in that section's
        event; if not, it is answered as if it did not exist."""
        if actor is None:
            return True
        return actor.may_see(
            customer_id=customer_id, organizer_id=self.inv.sections[section_id].organizer_id
        )

    def changing(self, section: Section) -> Section:
        """`section`, registered as changed by this batch (its loaded counts kept)."""
        if section.id not in self.effects.sections:
            self.effects.versions[section.id] = section.version
            self.effects.loaded[section.id] = (section.remaining, section.held, section.sold)
            self.effects.drawn[section.id] = 0
            self.effects.sections[section.id] = section
        return section

    def drawing(self, section: Section) -> None:
        """After seats left `section`'s remaining: the batch's lowest point so far."""
        below = self.effects.loaded[section.id][0] - section.remaining
        if below > self.effects.drawn[section.id]:
            self.effects.drawn[section.id] = below

    def settle(self, hold: Hold, status: str) -> Hold:
        self.effects.hold_statuses.setdefault(hold.id, hold.status)
        settled = hold.settled(status, self.now)  # type: ignore[arg-type]
        self.inv.holds[hold.id] = settled
        self.effects.changed_holds[hold.id] = settled
        if status in ("confirmed", "released"):
            self.effects.freed_items.extend(
                (hold.id, item.section_id, hold.event_id) for item in hold.items if item.active
            )
        return settled

    def check_customer(
        self, section: Section, customer_id: str | None, qty: int
    ) -> CustomerLimitExceeded | None:
        limit = section.max_per_customer
        if limit is None or customer_id is None:
            return None
        has = self.inv.tallies.get((section.event_id, customer_id), 0)
        if has + qty <= limit:
            return None
        self.short = True
        return CustomerLimitExceeded(
            limit=limit, remaining_for_customer=max(0, limit - has), requested=qty
        )

    def short_of_seats(self, qty: int, remaining: int) -> InsufficientSeats:
        self.short = True
        return InsufficientSeats(requested=qty, remaining=remaining)

    def add_tickets(self, section: Section, customer_id: str | None, qty: int) -> None:
        if section.max_per_customer is None or customer_id is None:
            return
        key = (section.event_id, customer_id)
        self.inv.tallies[key] = self.inv.tallies.get(key, 0) + qty
        self.effects.tally_changes[key] = self.effects.tally_changes.get(key, 0) + qty

    def take_tickets(self, event_id: str, customer_id: str | None, qty: int) -> None:
        key = (event_id, customer_id or "")
        if customer_id is None or key not in self.inv.tallies:
            return  # no cap on this event: no tally kept
        self.inv.tallies[key] -= qty
        self.effects.tally_changes[key] = self.effects.tally_changes.get(key, 0) - qty

    # The audit trail ---------------------------------------------------------------

    def record(
        self,
        action: Action,
        section: Section,
        qty: int,
        command: Command | None,
        *,
        hold: Hold | None = None,
        customer_id: str | None = None,
        hold_id: str | None = None,
        booking_id: str | None = None,
    ) -> None:
        if hold is not None:
            customer_id, hold_id = hold.customer_id, hold.id
        elif isinstance(command, Book | PlaceHold):
            customer_id = command.customer_id
        self.effects.audit.append(
            AuditRecord(
                self.now,
                section.event_id,
                section.id,
                action,
                qty,
                customer_id=customer_id,
                hold_id=hold_id,
                booking_id=booking_id,
                request_id=None if command is None else command.request_id,
            )
        )

    def record_refusal(
        self,
        action: Action,
        section: Section,
        qty: int,
        refusal: BoxofficeError,
        command: Book | PlaceHold,
    ) -> None:
        self.refused(
            action, section.event_id, section.id, qty, refusal, command.customer_id, None, command
        )

    def record_hold_refusal(
        self, action: Action, hold: Hold, refusal: BoxofficeError, command: Command
    ) -> None:
        self.refused(
            action, hold.event_id, None, hold.qty, refusal, hold.customer_id, hold.id, command
        )

    def refused(
        self,
        action: Action,
        event_id: str,
        section_id: str | None,
        qty: int,
        refusal: BoxofficeError,
        customer_id: str | None,
        hold_id: str | None,
        command: Command,
    ) -> None:
        self.effects.audit.append(
            AuditRecord(
                self.now,
                event_id,
                section_id,
                action,
                qty,
                outcome="refused",
                reason=refusal.code,
                customer_id=customer_id,
                hold_id=hold_id,
                request_id=command.request_id,
            )
        )
