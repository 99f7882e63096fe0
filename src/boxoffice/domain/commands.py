"""Every change to the inventory, as a command: what a caller asks for, not how it is done.

    Book           sell seats of one section now
    PlaceHold      set seats of one or more sections of one event aside, until `expires_at`
    ConfirmHold    turn an active hold into bookings
    ReleaseHold    give a hold's seats back
    CancelBooking  give a booking's seats back
    SweepExpired   give back the seats of expired holds in some sections (the sweeper)

They are decided in arrival order by `domain/decisions.py`, in batches, on a
snapshot of the rows they touch; `booking/` loads that snapshot and writes
what was decided. A command that carries an `Idempotency` key is answered
once, and its answer is stored with its effects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from boxoffice.domain.access import Principal
from boxoffice.domain.errors import InvalidRequest
from boxoffice.domain.ids import cached_canonical_id
from boxoffice.domain.model import Booking, Hold


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A client's idempotency key, scoped to the caller, and a fingerprint of its request."""

    scope: str
    key: str
    fingerprint: str

    @property
    def ident(self) -> tuple[str, str]:
        return (self.scope, self.key)


# Not frozen, though treated as immutable: made once per request on the hot path, and a
# frozen dataclass takes five times as long to construct.
@dataclass(slots=True)
class Book:
    """Sell `qty` seats of one section, all or none."""

    event_id: str
    section_id: str
    qty: int
    customer_id: str | None = None
    idempotency: Idempotency | None = None
    request_id: str | None = None
    actor: Principal | None = None

    def check_quantity(self, max_tickets: int) -> None:
        """Refuse quantities outside the per-request limit before touching the database."""
        check_quantity(self.qty, max_tickets, "qty")

    @property
    def section_names(self) -> tuple[str, ...]:
        """The sections it names, as the client spelt them."""
        return (self.section_id,)


@dataclass(frozen=True, slots=True)
class HoldItemRequest:
    section_id: str
    qty: int


@dataclass(frozen=True, slots=True)
class PlaceHold:
    """Set seats of one or more sections of one event aside: every item, or none."""

    event_id: str
    items: tuple[HoldItemRequest, ...]
    ttl_seconds: int
    customer_id: str | None = None
    idempotency: Idempotency | None = None
    request_id: str | None = None
    actor: Principal | None = None

    def check_quantity(self, max_tickets: int) -> None:
        """Each item, and the hold as a whole, within the per-request limit."""
        seen: set[str] = set()
        for index, item in enumerate(self.items):
            check_quantity(item.qty, max_tickets, f"items.{index}.qty")
            # However the id is spelt (case, braces, no hyphens): it names one section.
            section = cached_canonical_id(item.section_id) or item.section_id
            if section in seen:
                raise InvalidRequest(
                    "Each section may appear once in a hold.", field=f"items.{index}.sectionId"
                )
            seen.add(section)
        check_quantity(sum(item.qty for item in self.items), max_tickets, "items")

    @property
    def qty(self) -> int:
        return sum(item.qty for item in self.items)

    @property
    def section_names(self) -> tuple[str, ...]:
        """The sections it names, as the client spelt them."""
        return tuple(item.section_id for item in self.items)


# Confirm, release and cancel name a hold or a booking by id alone. Every statement of
# their transaction names the event too (docs/scaling.md), so the booker learns it first
# (`booking/events_of.py`) and sets `event_id`; None: no such hold or booking.


@dataclass(frozen=True, slots=True)
class ConfirmHold:
    hold_id: str
    payment_reference: str | None = None
    idempotency: Idempotency | None = None
    request_id: str | None = None
    actor: Principal | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseHold:
    hold_id: str
    idempotency: Idempotency | None = None
    request_id: str | None = None
    actor: Principal | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelBooking:
    booking_id: str
    idempotency: Idempotency | None = None
    request_id: str | None = None
    actor: Principal | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class SweepExpired:
    """Give back the seats of every expired hold in these sections: (event id, section id)."""

    sections: tuple[tuple[str, str], ...]
    idempotency: None = None
    request_id: str | None = None


Command = Book | PlaceHold | ConfirmHold | ReleaseHold | CancelBooking | SweepExpired


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A confirmed hold and the bookings it became, one per item."""

    hold: Hold
    bookings: tuple[Booking, ...]


@dataclass(frozen=True, slots=True)
class Released:
    """A hold released now, or found released, expired or confirmed already."""

    hold: Hold


@dataclass(frozen=True, slots=True)
class Swept:
    seats: int


def events_named(commands: Iterable[Command]) -> set[str]:
    """The events these commands write to, as their callers spelt them (confirm, release and
    cancel once their event is known; the sweeper's by the sections it names)."""
    named: set[str] = set()
    for command in commands:
        if isinstance(command, SweepExpired):
            named.update(event_id for event_id, _ in command.sections)
        elif command.event_id is not None:
            named.add(command.event_id)
    return named


def check_quantity(qty: int, max_tickets: int, field: str) -> None:
    if not 1 <= qty <= max_tickets:
        raise InvalidRequest(f"{field} must be between 1 and {max_tickets}.", field=field)
